"""The Serve page on the tiny model: Start serves the picked model and checked adapters on a
localhost port, a real OpenAI client naming an adapter gets its reply, the request shows in the
log and the live figures, the snippets and URL are the server's; Stop and closing the window end
the server; a refusal (others may connect but no key, a busy port) is one line on the page; "Serve
elsewhere…" opens the vLLM export for the same model and adapters."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from lora_adapters import library_adapter
from PySide6.QtGui import QGuiApplication

from studio import workers
from studio.main_window import MainWindow
from studio.pages.serve import ServePage

TIMEOUT_MS = 60_000


@pytest.fixture
def adapters(tiny_model_dir) -> list[str]:
    """Two adapters for the tiny model in the library, and one made for another base."""
    library_adapter(tiny_model_dir, "pirate")
    library_adapter(tiny_model_dir, "parrot", seed=2)
    library_adapter(tiny_model_dir, "elsewhere", seed=3, meta={"base_model_fingerprint": "0123456789abcdef"})
    return ["pirate", "parrot"]


def _pick(qtbot, page: ServePage, model) -> None:
    with qtbot.waitSignal(page.adaptersListed, timeout=TIMEOUT_MS):
        page.model_picker.set_ref(str(model))
    page.form.port_spin.setValue(0)  # any free port


def _start(qtbot, page: ServePage) -> str:
    """Press Start; the page's outcome ("serving" or "failed")."""
    with qtbot.waitSignal(page.servingChanged, timeout=TIMEOUT_MS) as outcome:
        page.start_button.click()
        assert page.state_label.text().startswith("Loading") and page.busy_bar.isVisible()
        assert not page.start_button.isEnabled() and not page.form.isEnabled()
    return outcome.args[0]


def _refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "/models", timeout=5)
    except urllib.error.URLError:
        return True
    return False


def test_a_client_naming_an_adapter_is_answered_logged_and_counted_until_stop(qtbot, shown, tiny_model_dir,
                                                                              adapters):
    from openai import OpenAI

    page = shown(ServePage())
    _pick(qtbot, page, tiny_model_dir)
    listed = [page.form.adapters_list.item(row).text() for row in range(page.form.adapters_list.count())]
    assert sorted(listed) == sorted(adapters)  # not the one made for another base
    assert not page.elsewhere_button.isEnabled()  # nothing checked to export
    page.form.set_checked(["pirate"])
    elsewhere = page.serve_elsewhere()  # what "Serve elsewhere…" opens: the same model and adapters
    assert page.elsewhere_button.isEnabled() and elsewhere.isVisible()
    assert (elsewhere.model, elsewhere.adapters) == (str(tiny_model_dir), ["pirate"])
    elsewhere.reject()

    assert _start(qtbot, page) == "serving", page.error_label.text()
    url = page.server.url
    assert url.startswith("http://127.0.0.1:") and page.state_label.text() == f"Serving at {url}"
    assert page.connect_panel.url_label.text() == url and not page.busy_bar.isVisible()
    names = [page.connect_panel.model_combo.itemText(i) for i in range(page.connect_panel.model_combo.count())]
    assert names == page.server.model_names and names[1:] == ["pirate"]
    assert page.connect_panel.models_label.text() == ", ".join(names)
    page.connect_panel.model_combo.setCurrentText("pirate")
    curl = page.connect_panel.curl_view.text.toPlainText()
    assert url in curl and "pirate" in curl
    assert url in page.connect_panel.python_view.text.toPlainText()
    page.connect_panel.python_view.copy_button.click()
    assert QGuiApplication.clipboard().text() == page.connect_panel.python_view.text.toPlainText()
    page.connect_panel.copy_url_button.click()
    assert QGuiApplication.clipboard().text() == url

    client = OpenAI(base_url=url, api_key="unused", max_retries=0)
    with qtbot.waitSignal(page.requestsLogged, timeout=TIMEOUT_MS):
        reply = client.chat.completions.create(model="pirate", messages=[{"role": "user", "content": "Ahoy"}],
                                               max_tokens=8, temperature=0)
    log = page.log_view.log
    assert log.rowCount() == 1
    _time, client_address, model, endpoint, status, tokens, _seconds = page.log_view.cells(0)
    assert client_address.startswith("127.0.0.1:") and model == "pirate" and status == "200"
    assert endpoint == "/v1/chat/completions"
    assert tokens == f"{reply.usage.prompt_tokens} + {reply.usage.completion_tokens}"
    qtbot.waitUntil(lambda: page.figures.labels["requests"].text() == "1", timeout=3_000)  # polled every second
    assert float(page.figures.labels["tokens_per_s"].text()) > 0

    with qtbot.waitSignal(page.servingChanged, timeout=TIMEOUT_MS) as stopped:
        page.stop_button.click()
        assert page.state_label.text() == "Stopping…" and not page.stop_button.isEnabled()
    assert stopped.args[0] == "stopped" and page.state_label.text() == "Stopped."
    assert _refused(url)
    assert page.start_button.isEnabled() and page.form.isEnabled()
    assert page.connect_panel.url_label.text().startswith("Not serving")
    assert log.rowCount() == 1  # the log stays to be read


def test_a_refusal_is_one_line_on_the_page(qtbot, shown, tiny_model_dir):
    page = shown(ServePage())
    _pick(qtbot, page, tiny_model_dir)
    page.form.others_check.setChecked(True)
    assert page.form.host_label.text().startswith("0.0.0.0") and page.form.key_edit.isEnabled()
    assert _start(qtbot, page) == "failed"
    assert page.error_label.isVisible() and "key" in page.error_label.text()
    assert "\n" not in page.error_label.text() and page.state_label.text() == "Not serving."

    page.form.others_check.setChecked(False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        page.form.port_spin.setValue(port)
        assert _start(qtbot, page) == "failed"
    assert str(port) in page.error_label.text() and "\n" not in page.error_label.text()
    assert page.start_button.isEnabled() and page.server is None

    page.form.others_check.setChecked(True)
    page.form.generate_button.click()
    assert len(page.form.key_edit.text()) >= 32 and page.form.api_key == page.form.key_edit.text()


def test_closing_the_window_stops_the_server(qtbot, tiny_model_dir):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    window.show_page("Serve")
    page = window.serve_page
    _pick(qtbot, page, tiny_model_dir)
    assert _start(qtbot, page) == "serving", page.error_label.text()
    url = page.server.url
    window.close()
    assert not workers.live_tasks() and _refused(url)


def test_a_run_that_would_not_fit_beside_the_served_model_stops_the_server_with_a_notice(qtbot, shown,
                                                                                          tiny_model_dir):
    from engine.run.config import RunConfig

    page = shown(ServePage())
    _pick(qtbot, page, tiny_model_dir)
    assert _start(qtbot, page) == "serving", page.error_label.text()
    url = page.server.url
    fits = RunConfig(model=str(tiny_model_dir), dataset="d.jsonl", batch_size=1, max_length=64, device="cpu")
    page.make_room_for_training(fits)
    assert page.server is not None and not _refused(url)

    too_big = RunConfig(model=str(tiny_model_dir), dataset="d.jsonl", batch_size=4096, max_length=1 << 20,
                        device="cpu")
    with qtbot.waitSignal(page.servingChanged, timeout=TIMEOUT_MS) as stopped:
        page.make_room_for_training(too_big)
    assert stopped.args[0] == "stopped" and _refused(url)
    assert page.state_label.text().startswith("Stopped serving to make room for training: training")
    assert page.start_button.isEnabled()
