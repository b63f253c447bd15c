"""``streamlit run app.py [-- --workspace DIR]`` from a checkout: densprune's app (see densprune/app/main.py).

``densprune app DIR`` does the same from any folder once densprune is installed.
"""

from densprune.app.main import run

run()
