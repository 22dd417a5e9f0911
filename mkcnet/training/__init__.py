"""Training: `objective` (L_d + L_q + L_ω), `meta_step` (Stage II), `trainer` (the epoch loop,
run directory, resume), `cli` (`mkcnet train`). Import from the modules: the package stays light
so every command starts fast."""
