"""Using trained models: `predict` (batches → probabilities and features), `evaluate` (a split
→ metrics and a results pack), `results` (the pack on disk), `cli` (`mkcnet evaluate`,
`mkcnet predict`). Import from the modules: the package stays light so every command starts fast."""
