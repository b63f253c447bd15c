"""Export: write a saved plan in a training format into the workspace, download it, show its manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import streamlit as st

from densprune.app import page_data, session
from densprune.export import writers as exports

ws, stamp = session.ws_args()
FORMAT_HELP = {
    "parquet": "one row per kept sample: uid, caption, image reference, concept, scores",
    "csv": "tab-separated filepath/title, what open_clip_train's --dataset-type csv reads "
           "(images inside shards or parquet are written out as files beside it)",
    "datacomp": "sorted uids as a numpy u8,u8 array, what DataComp's resharder.py reads",
    "mask": "a bool .npy over all rows (row_idx order)",
    "keys": "one uid per line",
    "webdataset": "new .tar shards holding only the kept samples",
}
MAX_DOWNLOAD = 200 * 2**20  # bytes; bigger files stay on disk

st.title("Export")
saved = session.saved_plans_or_stop(ws, "No saved plans yet. Set a budget on the Budget page and save it as a named "
                                   "plan; it then shows up here.")

c1, c2 = st.columns(2)
plan = c1.selectbox("Plan", saved["name"].tolist(), key="export_plan")
formats = exports.formats_for(session.meta(ws, stamp))
fmt = c2.selectbox("Format", list(formats), key="export_format",
                   help=None if formats == exports.FORMATS else
                   "This workspace was built from released embeddings and holds no image files: csv and "
                   "webdataset, which copy images, are not offered.")
row = saved.set_index("name").loc[plan]
c1.caption(f"{session.describe_saved(row['params'])}: keeps {int(row['n_kept']):,} of "
           f"{int(row['pool_size']):,} pool samples")
c2.caption(page_data.escape_markdown(FORMAT_HELP[fmt]))

out_dir = Path(ws) / "exports"
default_name = f"{plan}-wds" if fmt == "webdataset" else f"{plan}{exports.DEFAULT_SUFFIX[fmt]}"
st.session_state.setdefault("export_name", "")
file_name = st.text_input("File name (inside the workspace's exports/ folder)", key="export_name",
                          placeholder=default_name).strip() or default_name
valid = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,120}", file_name) is not None
if not valid:
    st.error("Use letters, digits, '_', '.', '-' in the file name (no folders).")
target = out_dir / file_name
st.caption(f"Writes `{target}` and `{target.name}.manifest.json`.")

if st.button("Export", type="primary", disabled=not valid, key="export_go"):
    try:
        with st.spinner(f"Exporting {int(row['n_kept']):,} samples as {fmt}…"):
            written = exports.export_plan(ws, plan, fmt, target)
        st.session_state["export_last"] = str(written)
        st.success(f"Wrote {written}", icon=":material/check:")
    except (ValueError, OSError) as exc:
        st.error(f"Export failed: {page_data.escape_markdown(str(exc))}")

last = st.session_state.get("export_last")
if last and Path(last).exists() and Path(last).resolve().parent == out_dir.resolve():
    path = Path(last)
    manifest_path = exports.manifest_path(path)
    try:
        manifest = exports.read_manifest(path)
    except ValueError:
        manifest = None
    d1, d2 = st.columns(2)
    if path.is_file() and path.stat().st_size <= MAX_DOWNLOAD:
        d1.download_button(f"Download {path.name} ({path.stat().st_size / 2**20:.1f} MiB)", path.read_bytes(),
                           file_name=path.name, key="export_dl", icon=":material/download:")
    else:
        d1.caption(f"`{path}` is a folder or too large to download here; it is on disk in the workspace.")
    if manifest is not None:
        d2.download_button("Download the manifest", json.dumps(manifest, indent=2), file_name=manifest_path.name,
                           key="export_dl_manifest", mime="application/json")
        st.subheader("Manifest")
        st.json(manifest, expanded=2)

rows = exports.list_exports(out_dir)
if rows:
    st.subheader("Exports in this workspace")
    st.dataframe(rows, hide_index=True, width="stretch")
