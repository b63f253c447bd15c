"""``streamlit run app.py [-- --workspace DIR]`` from a checkout: densprune's app (see densprune/app/main.py).

``densprune app DIR`` does the same from any folder once densprune is installed.
"""

import logging
from pathlib import Path

from densprune.app.main import run

if (Path(__file__).parent / "pages").is_dir():  # e.g. pages/__pycache__ left by an older checkout
    logging.getLogger("densprune.app").warning(
        "%s exists: Streamlit then treats it as the app's page folder and shows 'Page not found' on deep "
        "links; delete it (densprune's pages live in densprune/app/views/)", Path(__file__).parent / "pages")
run()
