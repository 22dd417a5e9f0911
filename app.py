"""The MKCNet workbench: `python app.py` (also `mkcnet app`), and the Hugging Face Spaces entry.

Runs from a clone without installing the package (Spaces installs only requirements.txt).
The environment is made offline-safe before gradio is imported, by mkcnet.workbench itself.
"""

import sys

from mkcnet.workbench.app import main

if __name__ == "__main__":
    sys.exit(main())
