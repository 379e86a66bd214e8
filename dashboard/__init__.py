"""The Streamlit dashboard over the study storage (``nas dashboard``)."""
