"""The triage service: `create_app(settings)` over one or more bundles (`cnnlab serve`).

FastAPI lives here and nowhere below; the library underneath knows nothing of HTTP."""
