"""The script Streamlit runs for `cnnlab ui` (on every interaction): settings, then the pages."""

import os

import streamlit as st

from cnnlab.ui.launch import API_CA_ENV, API_ENV
from cnnlab.ui.views import main

st.set_page_config(page_title="cnnlab triage", page_icon=":material/radiology:", layout="wide")
main(os.environ.get(API_ENV, ""), os.environ.get(API_CA_ENV) or None)
