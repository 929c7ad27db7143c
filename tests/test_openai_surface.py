"""OpenAI endpoints as the official client calls them: a file's content, and deleting one's own
model (an uploaded or fine-tuned adapter), with the client's own error classes."""

import openai
import pytest

from tests.test_trans_peft import reverse_task


@pytest.fixture(scope="module")
def clients(gateway):
    return {name: openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key(name), max_retries=0)
            for name in ("surface-a", "surface-b")}


def test_file_content_is_the_bytes_uploaded_and_private(clients):
    data = reverse_task(12)
    uploaded = clients["surface-a"].files.create(file=("train.jsonl", data), purpose="fine-tune")
    assert clients["surface-a"].files.content(uploaded.id).read() == data
    with pytest.raises(openai.NotFoundError):  # another tenant's file is missing, not forbidden
        clients["surface-b"].files.content(uploaded.id)


def test_deleting_ones_own_model(gateway, clients, lora_factory):
    assert gateway.add_adapter("surface-a", "mine", lora_factory(51)).status_code == 201
    a, b = clients["surface-a"], clients["surface-b"]
    with pytest.raises(openai.NotFoundError):  # another tenant cannot delete (or see) it
        b.models.delete("mine")
    with pytest.raises(openai.PermissionDeniedError):
        a.models.delete("tiny")  # a base model
    deleted = a.models.delete("mine")
    assert deleted.id == "mine" and deleted.deleted is True
    assert "mine" not in {m.id for m in a.models.list().data}
    with pytest.raises(openai.NotFoundError):
        a.completions.create(model="mine", prompt="Hi", max_tokens=1)
    with pytest.raises(openai.NotFoundError):
        a.models.delete("mine")  # already gone


def test_responses_api_for_bases_and_own_adapters(gateway, clients, lora_factory):
    """The Responses API as the official client calls it, plain and streamed: same answer as the
    chat endpoint (greedy), the caller's model names only, and another tenant's adapter unknown."""
    assert gateway.add_adapter("surface-a", "resp-own", lora_factory(52)).status_code == 201
    a, b = clients["surface-a"], clients["surface-b"]
    for model in ("tiny", "resp-own"):
        response = a.responses.create(model=model, input="Hello there", max_output_tokens=6, temperature=0)
        assert response.model == model and response.output_text
        # the tiny model rarely stops on its own: cut at max_output_tokens, as OpenAI reports it
        assert response.status == "completed" or response.incomplete_details.reason == "max_output_tokens"
        assert response.usage.output_tokens >= 1
        chat = a.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello there"}],
                                         max_tokens=6, temperature=0)
        assert response.output_text == chat.choices[0].message.content, model

        raw = []
        with a.responses.create(model=model, input="Hello there", max_output_tokens=6, temperature=0,
                                stream=True) as stream:
            for event in stream:
                raw.append(event)
        deltas = "".join(e.delta for e in raw if e.type == "response.output_text.delta")
        completed = raw[-1]
        assert completed.type in ("response.completed", "response.incomplete") and completed.response.model == model
        assert deltas == response.output_text
        assert not any("lora-" in e.model_dump_json() for e in raw)  # internal adapter names never leak
    with pytest.raises(openai.NotFoundError):
        b.responses.create(model="resp-own", input="Hello", max_output_tokens=2)
    with pytest.raises(openai.BadRequestError):  # stateless: nothing to continue from
        a.responses.create(model="tiny", input="Hello", previous_response_id="resp_123")
    with pytest.raises(openai.BadRequestError) as too_long:
        a.responses.create(model="tiny", input="Hello", max_output_tokens=10**9)
    assert too_long.value.code == "too_many_tokens" and too_long.value.param == "max_output_tokens"
    with gateway.admin() as admin:
        metrics = admin.get("/metrics").text
    assert 'endpoint="/v1/responses"' in metrics
