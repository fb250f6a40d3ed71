"""A stored prediction's kept image, and its explanation by any CAM method, for review pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from cnnlab.serve.deps import Clinician, ModelsDep, SettingsDep, StoreDep, stored_prediction
from cnnlab.serve.inference import METHODS_TEXT, explain_kept, explain_method, run_model_work
from cnnlab.serve.schemas import ExplanationOut, ModelInfo
from cnnlab.serve.settings import ServeSettings
from cnnlab.serve.store import PredictionRow

router = APIRouter(prefix="/v1/predictions", tags=["predict"])

RequestId = Annotated[str, Path(max_length=64, description="The request id a prediction returned.")]


def _kept_bytes(settings: ServeSettings, pred: PredictionRow) -> bytes:
    # image_file is a name the service generated, never client input: no path to sanitise.
    path = settings.images_dir / pred.image_file if pred.image_file else None
    if path is None or not path.is_file():
        raise HTTPException(404, f"the image of prediction '{pred.request_id}' is no longer kept")
    return path.read_bytes()


@router.get(
    "/{request_id}/image",
    summary="The image a prediction was made on, as the model saw it: decoded, windowed, metadata-free PNG (clinician)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"description": "No such prediction, or its image is gone"}},
)
def prediction_image(
    request: Request, _who: Clinician, store: StoreDep, settings: SettingsDep, request_id: RequestId
) -> Response:
    data = _kept_bytes(settings, stored_prediction(request, store, request_id))
    # Patient images: no shared cache may keep them.
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, no-store"})


@router.get(
    "/{request_id}/explanation",
    response_model=ExplanationOut,
    summary="A CAM of the predicted class on the kept image, by the model version that made the prediction (clinician)",
    responses={
        404: {"description": "No such prediction, its image is gone, or its model version is no longer served"},
        422: {"description": "Unknown CAM method"},
        504: {"description": "The model did not answer in time"},
    },
)
async def prediction_explanation(
    request: Request,
    _who: Clinician,
    store: StoreDep,
    settings: SettingsDep,
    models: ModelsDep,
    request_id: RequestId,
    method: Annotated[
        str, Query(description=f"The CAM method: {METHODS_TEXT}. In a URL, gradcam++ is gradcam%2B%2B.")
    ] = "gradcam",
) -> ExplanationOut:
    method = explain_method(method, "method")
    pred = stored_prediction(request, store, request_id)
    model = models.versions(pred.model_name).get(pred.model_version)
    if model is None:
        raise HTTPException(
            404, f"model {pred.model_name}@{pred.model_version}, which made this prediction, is no longer served"
        )
    kept = _kept_bytes(settings, pred)
    explanation = await run_model_work(
        request, settings.request_timeout_s, lambda cancel: explain_kept(model, kept, pred.label, method, cancel)
    )
    return ExplanationOut(
        **explanation.model_dump(),
        request_id=pred.request_id,
        model=ModelInfo(name=model.name, version=model.version, sha256=model.sha256),
        label=pred.label,
    )
