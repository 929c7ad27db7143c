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
