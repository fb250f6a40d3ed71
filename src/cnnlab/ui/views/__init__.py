"""The pages of `cnnlab ui`, each a function Streamlit runs top to bottom on every interaction.

Streamlit reruns the whole page whenever a widget changes, so anything that costs the API work or
writes to it (a prediction, an explanation, feedback, a resolution, an activation) happens once and
is remembered in `st.session_state`; a rerun only redraws. The API key lives there too and nowhere
else: not in the URL, not on disk. Images are shown as the API sends them (PNG bytes in an <img>),
never decoded here.

One module per page (sign_in, predict, review, monitor, models), what they share in widgets.py,
and navigation.py, which picks the pages a key's role may see."""

from cnnlab.ui.views.navigation import main

__all__ = ["main"]
