"""The app's pages: each file is a Streamlit script the router runs (see densprune/app/main.py)."""
