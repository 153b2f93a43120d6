"""Streamlit glue and plotly figures for app.py and pages/. The only part of nml_core that imports streamlit or
plotly; the engine (nml_core.api) never imports this package."""
