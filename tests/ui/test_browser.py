"""The clinician's page in a real browser (Debian's Chromium through Playwright) against a real
service: sign-in, predict with Grad-CAM, feedback, the review queue, the monitor and the models, each
role seeing only its own pages; screenshots of every page go to test-artifacts/ui-*.png."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.ui.conftest import (
    UI_WAIT_MS,
    XRAY,
    Stack,
    go_to,
    screenshot,
    shown_request_id,
    sign_in,
    xray_image,
)

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _page(browser, viewport: dict[str, int] = DESKTOP) -> Page:
    return browser.new_page(viewport=viewport)


def expect_pages(page: Page, titles: list[str]) -> None:
    """The sidebar lists exactly these pages (each link's text also holds its icon's name)."""
    links = page.get_by_test_id("stSidebarNav").get_by_role("link")
    expect(links).to_have_text([re.compile(rf"{re.escape(t)}$") for t in titles], timeout=UI_WAIT_MS)


def _upload(page: Page, path) -> None:
    page.set_input_files("input[type=file]", str(path))
    expect(page.get_by_text("Predicted class")).to_be_visible(timeout=UI_WAIT_MS)


def test_clinician_predicts_gives_feedback_once_and_resolves_the_case(browser, stack: Stack) -> None:
    page = _page(browser)
    page.goto(stack.ui)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=UI_WAIT_MS)
    screenshot(page, "sign-in")
    sign_in(page, stack, "clinician")
    expect_pages(page, ["Predict", "Review queue", "Monitor"])  # no Models

    # Predict: the kept image beside the overlay, the class, probabilities, decision, review banner.
    _upload(page, xray_image("pneumonia"))
    request_id = shown_request_id(page)
    expect(page.get_by_role("img", name="the image as the model sees it")).to_be_visible()
    heat = page.get_by_role("img", name="Grad-CAM overlay: heat map")
    expect(heat).to_be_visible(timeout=UI_WAIT_MS)
    expect(heat).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    expect(page.get_by_text("Needs review")).to_be_visible()  # the service's threshold is 0.99
    expect(page.get_by_test_id("stMetricValue").nth(0)).to_have_text(re.compile(r"^(covid19|normal|pneumonia)$"))
    expect(page.get_by_test_id("stMetricValue").nth(2)).to_have_text(re.compile(r"^(positive|negative)$"))
    expect(page.get_by_text(re.compile(r"Model xray, version [0-9a-f]{12}"))).to_be_visible()
    expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(1)  # the probabilities
    predicted = stack.call("GET", "/v1/review-queue", "clinician").json()
    assert any(item["request_id"] == request_id for item in predicted), "the prediction is not in the queue"

    # Opacity is the browser's business; the method is the API's (an explanation, not a new prediction).
    expect(heat).to_have_attribute("style", re.compile(r"opacity:0\.45"))
    slider = page.get_by_role("slider")
    slider.focus()
    for _ in range(3):
        slider.press("ArrowRight")
    expect(page.get_by_role("img", name="Grad-CAM overlay: heat map")).to_have_attribute(
        "style", re.compile(r"opacity:0\.60"), timeout=UI_WAIT_MS
    )
    page.get_by_test_id("stSelectbox").filter(has_text="CAM method").click()
    page.get_by_role("option", name="Eigen-CAM").click()
    expect(page.get_by_role("img", name="Eigen-CAM overlay: heat map")).to_be_visible(timeout=UI_WAIT_MS)
    expect(page.get_by_role("heading", name="Eigen-CAM overlay")).to_be_visible()
    assert shown_request_id(page) == request_id
    screenshot(page, "predict")

    # Feedback: disagree, pick the class, double-click submit: one row, one confirmation. (Streamlit often
    # merges a double click into one rerun; test_views.py forces the click that lands mid-send.)
    shown = page.get_by_test_id("stMetricValue").nth(0).inner_text()
    label = next(c for c in ("covid19", "normal", "pneumonia") if c != shown)
    page.get_by_text("Disagree", exact=True).click()
    page.get_by_test_id("stSelectbox").filter(has_text="Correct class").click()
    page.get_by_role("option", name=label, exact=True).click()
    page.get_by_label("Note (optional)").fill("consolidation in the right lower lobe")
    page.get_by_role("button", name="Submit feedback").dblclick()
    confirmation = page.get_by_text(re.compile(r"Feedback saved, id \d+"))
    expect(confirmation).to_be_visible(timeout=UI_WAIT_MS)
    feedback_id = int(re.search(r"id (\d+)", confirmation.inner_text()).group(1))
    expect(page.get_by_role("button", name="Submit feedback")).to_have_count(0)
    screenshot(page, "feedback")
    rows = stack.call("GET", "/v1/feedback", "clinician", params={"request_id": request_id}).json()
    assert [(r["id"], r["label"], r["agrees"]) for r in rows] == [(feedback_id, label, False)]

    # Review queue: the case is there with its images; resolving it takes it out of the queue.
    queue = stack.call("GET", "/v1/review-queue", "clinician").json()
    item = next(i for i in queue if i["request_id"] == request_id)
    go_to(page, "Review queue")
    case = (
        page.get_by_test_id("stVerticalBlock")
        .filter(has=page.get_by_text(re.compile(rf"^Case {item['id']}$")))
        .filter(has=page.get_by_role("button", name="Resolve"))
        .last
    )
    expect(case.get_by_role("img", name=f"case {item['id']}: Grad-CAM overlay")).to_be_visible(timeout=UI_WAIT_MS)
    expect(case.get_by_role("img", name=f"case {item['id']}: the image as the model sees it")).to_be_visible()
    expect(case.get_by_text(f"Feedback so far: {label} (disagrees)")).to_be_visible()
    screenshot(page, "review")
    case.get_by_role("button", name="Resolve").click()  # the class it offers first: the feedback's
    expect(page.get_by_text(f"Case {item['id']} resolved as {label}.")).to_be_visible(timeout=UI_WAIT_MS)
    after = stack.call("GET", "/v1/review-queue", "clinician").json()
    assert len(after) == len(queue) - 1 and all(i["request_id"] != request_id for i in after)
    expect(page.get_by_text(re.compile(rf"^Case {item['id']}$"))).to_have_count(0)
    page.close()


def test_predict_page_on_a_phone_with_a_dicom(browser, stack: Stack) -> None:
    page = _page(browser, PHONE)
    page.goto(stack.ui)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=UI_WAIT_MS)
    assert page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollWidth") <= PHONE["width"]
    screenshot(page, "sign-in-phone")
    sign_in(page, stack, "clinician")
    dicom = sorted((XRAY / "dicom").glob("*.dcm"))[0]
    _upload(page, dicom)
    expect(page.get_by_role("img", name="Grad-CAM overlay: heat map")).to_be_visible(timeout=UI_WAIT_MS)
    expect(page.get_by_role("button", name="Submit feedback")).to_be_visible()
    # Usable at 390 px: nothing is wider than the screen.
    assert page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollWidth") <= PHONE["width"]
    screenshot(page, "predict-phone")
    page.close()


def test_api_errors_are_readable_messages(browser, stack: Stack, tmp_path) -> None:
    page = _page(browser)
    sign_in(page, stack, "clinician")
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image, only named like one\n")
    page.set_input_files("input[type=file]", str(text_file))
    error = page.get_by_test_id("stAlert").filter(has_text="No prediction.")
    expect(error).to_contain_text("The service reads PNG, JPEG and DICOM images only.", timeout=UI_WAIT_MS)
    expect(error).to_contain_text("(HTTP 415)")
    expect(page.get_by_text("Traceback")).to_have_count(0)
    expect(page.get_by_role("button", name="Try again")).to_be_visible()
    screenshot(page, "predict-error")
    page.close()


def test_viewer_sees_the_monitor_only(browser, stack: Stack) -> None:
    stack.call("POST", "/v1/predict", "clinician", files={"file": ("x", xray_image("normal").read_bytes())})
    page = _page(browser)
    sign_in(page, stack, "viewer")
    # One page only: Streamlit then shows no page list at all.
    expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)
    expect(page.get_by_role("heading", name="Monitor", level=1)).to_be_visible(timeout=UI_WAIT_MS)
    for hidden in ("Predict", "Review queue", "Models"):
        expect(page.get_by_role("link", name=hidden)).to_have_count(0)
    expect(page.get_by_role("button", name="Submit feedback")).to_have_count(0)
    expect(page.locator("input[type=file]")).to_have_count(0)
    # Requests, predictions, and the mix against validation, as charts (and live accuracy per week once a
    # clinician has given feedback, which another test of this session's stack may have done); latency
    # percentiles; drift.
    versions = stack.call("GET", "/v1/monitor").json()["versions"]
    charts = 3 + any(v["feedback"] for v in versions)
    expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(charts, timeout=UI_WAIT_MS)
    for name in ("Latency p50", "Latency p95", "Latency p99", "Verdict"):
        expect(page.get_by_test_id("stMetricLabel").filter(has_text=name)).to_have_count(1)
    expect(page.get_by_text("not enough data")).to_be_visible()
    screenshot(page, "monitor")
    page.close()


def test_admin_activates_a_version_after_confirming(browser, stack: Stack) -> None:
    page = _page(browser)
    sign_in(page, stack, "admin")
    expect_pages(page, ["Predict", "Review queue", "Monitor", "Models"])
    go_to(page, "Models")
    before = stack.call("GET", "/v1/models").json()
    inactive = next(m for m in before if not m["active"])
    activate = page.get_by_role("button", name="Activate")
    expect(activate).to_be_disabled()
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    screenshot(page, "models")
    page.get_by_text("I confirm: make xray").click()
    expect(activate).to_be_enabled(timeout=UI_WAIT_MS)
    activate.click()
    # This stack has no gate folder: the service refuses, and the admin overrides with a reason.
    expect(page.get_by_text("refused.")).to_be_visible(timeout=UI_WAIT_MS)
    box = page.get_by_role("textbox", name="Override with a reason")
    box.fill("browser test: this stack has no gate data")
    box.press("Enter")
    page.get_by_role("button", name="Send with the override").click()
    expect(page.get_by_text(f"xray {inactive['version']} is now the active version")).to_be_visible(timeout=UI_WAIT_MS)
    after = stack.call("GET", "/v1/models").json()
    assert [m["version"] for m in after if m["active"]] == [inactive["version"]]
    screenshot(page, "models-activated")
    page.close()


def test_wrong_and_expired_keys_are_refused(browser, stack: Stack) -> None:
    page = _page(browser)
    page.goto(stack.ui)
    for key, message in (
        ("cnl_00000000_not-a-real-key", "Sign-in failed: invalid or revoked API key (HTTP 401)"),
        (stack.keys["expired"], "Sign-in failed: API key expired"),
    ):
        page.get_by_label("API key", exact=True).fill(key)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("stAlert")).to_contain_text(message, timeout=UI_WAIT_MS)
        expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)
    screenshot(page, "sign-in-expired")
    page.close()
