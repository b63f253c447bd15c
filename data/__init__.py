"""densprune's bundled demo data, installed as ``densprune.demo_data`` (see pyproject.toml's package-dir).

``openclipart/`` holds the Open Clip Art Library 0.18 demo (parquet shards, categories, provenance);
``build_demo.py`` rebuilds it from Debian's openclipart packages.
"""
