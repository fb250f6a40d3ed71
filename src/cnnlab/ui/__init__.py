"""The clinician's web page (`cnnlab ui`): a Streamlit app that is a thin client of the service's
HTTP API. It holds no model and no database; the API key lives in the browser session only."""
