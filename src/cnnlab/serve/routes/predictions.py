"""A stored prediction's kept image, and its explanation by any CAM method, for review pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from cnnlab.data.decode import decode_bytes, decode_image
from cnnlab.explain.cam import METHODS
from cnnlab.serve.routes.predict import Explanation, ModelInfo, check_method, run_model_work
from cnnlab.serve.security import Clinician
from cnnlab.serve.store import PredictionRow

router = APIRouter(prefix="/v1/predictions", tags=["predict"])

RequestId = Annotated[str, Path(max_length=64, description="The request id a prediction returned.")]
KEPT_NAME = "kept image"
"""What decoder messages call a kept image (never the client's file name)."""


class ExplanationOut(Explanation):
    request_id: str
    model: ModelInfo
    label: str
    """The class explained: the one the model predicted."""


def stored_prediction(request: Request, request_id: str) -> PredictionRow:
    """The prediction with that request id (404 when none), noted for the audit row."""
    pred = request.app.state.store.prediction(request_id)
    if pred is None:
        raise HTTPException(404, f"no prediction with request id '{request_id}'")
    request.state.model_version = pred.model_version
    request.state.input_sha256 = pred.input_sha256
    return pred


def _kept_bytes(request: Request, pred: PredictionRow) -> bytes:
    # image_file is a name the service generated, never client input: no path to sanitise.
    path = request.app.state.settings.images_dir / pred.image_file if pred.image_file else None
    if path is None or not path.is_file():
        raise HTTPException(404, f"the image of prediction '{pred.request_id}' is no longer kept")
    return path.read_bytes()


@router.get(
    "/{request_id}/image",
    summary="The image a prediction was made on, as the model saw it: decoded, windowed, metadata-free PNG (clinician)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"description": "No such prediction, or its image is gone"}},
)
def prediction_image(request: Request, _who: Clinician, request_id: RequestId) -> Response:
    data = _kept_bytes(request, stored_prediction(request, request_id))
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
    request_id: RequestId,
    method: Annotated[str, Query(description=f"The CAM method: {', '.join(METHODS)}.")] = "gradcam",
) -> ExplanationOut:
    check_method(method)
    pred = stored_prediction(request, request_id)
    model = request.app.state.models.versions(pred.model_name).get(pred.model_version)
    if model is None:
        raise HTTPException(
            404, f"model {pred.model_name}@{pred.model_version}, which made this prediction, is no longer served"
        )
    kept = _kept_bytes(request, pred)
    clf = model.classifier

    def explain() -> Explanation:
        # The kept PNG is the decoded upload: decoding it again gives the pixels the prediction saw.
        image, info = decode_bytes(kept, KEPT_NAME)
        natural = decode_image(image, info.channels)
        pixels = decode_image(image, clf.preprocessing.channels)
        with model.lock:
            heat = clf.explain(pixels, method=method, class_index=clf.classes.index(pred.label))
        return Explanation.of(method, natural, heat)

    explanation = await run_model_work(request, explain)
    return ExplanationOut(
        **explanation.model_dump(),
        request_id=pred.request_id,
        model=ModelInfo(name=model.name, version=model.version, sha256=model.sha256),
        label=pred.label,
    )
