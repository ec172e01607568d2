"""The model catalogue: built-ins offline, the gateway's two lists, the operator's file, offers."""

import datetime
import json
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache

from conversations.accounts import services as accounts_services
from conversations.catalogue import selectors as catalogue
from conversations.catalogue.services import (
    REFRESH_LEASE_KEY,
    catalogue_refresh,
    catalogue_refresh_soon,
)
from conversations.chat import services
from conversations.gateway.profiles import BUILT_IN, DEMO_MODELS, SONNET_4_5
from conversations.models import GatewayModel, ModelOffer
from tests.support.factories import turn_settings
from tests.support.upstream_server import ErrorReply, FakeUpstream, Gate

MODELS_LIST = {
    "object": "list",
    "data": [
        {
            "id": "anthropic/claude-sonnet-4.5",
            "type": "chat-completion",
            "info": {"name": "Claude 4.5 Sonnet", "contextLength": 200000, "outputMax": 64000},
            "pricing": {"input": "3.3", "output": "16.5"},
        },
        {
            "id": "anthropic/claude-sonnet-5",
            "info": {"name": "Claude Sonnet 5", "contextLength": 1000000, "outputMax": 128000},
            "capabilities": {"thinking": "adaptive"},
        },
        {"id": "openai/gpt-4o", "info": {"name": "GPT-4o", "contextLength": 128000}},
    ],
}
DEPRECATIONS = {
    "data": [
        {
            "model": "anthropic/claude-sonnet-4.5",
            "status": "deprecated",
            "deprecated_at": "2026-08-01",
            "shutdown_at": "2026-12-15",
            "replaced_by": "anthropic/claude-sonnet-5",
        }
    ]
}


@pytest.fixture
def keyed(settings) -> None:
    """A deployment with a key (not the demo), refreshing nothing on its own."""
    settings.AIMLAPI_API_KEY = "sk-test-catalogue"
    settings.CHAT_MODELS_REFRESH_SECONDS = 0


def _ids(current: catalogue.Catalogue) -> list[str]:
    return [profile.id for profile in current.profiles]


@pytest.mark.django_db
def test_without_network_or_facts_the_built_ins_are_the_catalogue(keyed) -> None:
    assert _ids(catalogue.catalogue_current()) == [p.id for p in BUILT_IN]


@pytest.mark.django_db
def test_demo_mode_offers_the_demo_models(settings) -> None:
    settings.AIMLAPI_API_KEY = ""

    current = catalogue.catalogue_current()

    assert _ids(current) == [p.id for p in DEMO_MODELS]
    assert catalogue.default_model_id(catalogue=current) == DEMO_MODELS[0].id


@pytest.mark.django_db
def test_refresh_reads_both_lists_from_the_gateway(keyed, upstream: FakeUpstream) -> None:
    upstream.models_list = MODELS_LIST
    upstream.deprecations_list = DEPRECATIONS

    assert catalogue_refresh(base_url=upstream.base_url, timeout=5)

    assert sorted(upstream.models_requests) == [
        "/v1/models/deprecations",
        "/v1/models?include=pricing,capabilities",
    ]
    current = catalogue.catalogue_current()
    sonnet_4_5 = current.profile("claude-sonnet-4-5")
    assert sonnet_4_5.id == SONNET_4_5.id
    assert sonnet_4_5.input_price_per_mtok == Decimal("3.3")
    assert sonnet_4_5.lifecycle.shutdown_at == datetime.date(2026, 12, 15)
    assert sonnet_4_5.lifecycle.replaced_by == "anthropic/claude-sonnet-5"
    sonnet_5 = current.profile("anthropic/claude-sonnet-5")
    assert sonnet_5.kind == "adaptive"
    assert sonnet_5.max_output_tokens == 128_000
    assert sonnet_5.sampling_missing_reason() == "Claude Sonnet 5 chooses its own sampling."
    assert current.get("openai/gpt-4o") is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "broken",
    [
        ErrorReply(200, "<html>maintenance</html>"),
        ErrorReply(200, {"unexpected": True}),
        ErrorReply(503, {"message": "down"}),
        ErrorReply(200, b"\xff\xfe not json"),
    ],
    ids=["html", "wrong-shape", "503", "bytes"],
)
def test_an_unreadable_list_leaves_the_built_ins(keyed, upstream: FakeUpstream, broken) -> None:
    upstream.models_list = broken
    upstream.deprecations_list = broken

    assert not catalogue_refresh(base_url=upstream.base_url, timeout=5)

    assert not GatewayModel.objects.exists()
    assert catalogue.catalogue_current().profile(SONNET_4_5.id) == SONNET_4_5


@pytest.mark.django_db
def test_an_unreachable_gateway_leaves_the_built_ins(keyed) -> None:
    # Port 9 on loopback: nothing listens there, the connection is refused at once.
    assert not catalogue_refresh(base_url="http://127.0.0.1:9/v1", timeout=2)

    assert _ids(catalogue.catalogue_current()) == [p.id for p in BUILT_IN]


@pytest.mark.django_db(transaction=True)
def test_the_background_refresh_never_holds_up_a_turn(keyed, settings, upstream, make_user) -> None:
    settings.CHAT_MODELS_REFRESH_SECONDS = 3600
    cache.delete(REFRESH_LEASE_KEY)
    gate = Gate()
    upstream.models_gate = gate
    upstream.models_list = MODELS_LIST
    user = make_user("alice")
    conversation = services.conversation_create(owner=user)
    try:
        refresh = catalogue_refresh_soon()
        assert refresh is not None
        gate.wait_reached()
        # The gateway holds the models list; a turn starts meanwhile, on the built-in profile.
        started = services.turn_start(
            conversation_id=conversation.id,
            owner=user,
            content="Hi",
            settings=turn_settings(),
            model=SONNET_4_5.id,
        )
        assert started.reply.model == SONNET_4_5.id
        # A second refresh is not started while the first holds the lease.
        assert catalogue_refresh_soon() is None
    finally:
        gate.release()
    refresh.join(timeout=10)
    assert not refresh.is_alive()
    assert catalogue.catalogue_current().get("anthropic/claude-sonnet-5") is not None
    cache.delete(REFRESH_LEASE_KEY)


@pytest.mark.django_db
def test_the_operator_file_wins_and_a_broken_one_is_ignored(keyed, settings, tmp_path) -> None:
    good = tmp_path / "models.json"
    good.write_text(
        json.dumps(
            {
                "models": [
                    {"id": "anthropic/claude-sonnet-4.6", "shutdown_at": "2027-03-01"},
                    {
                        "id": "corp/claude-internal",
                        "kind": "adaptive",
                        "display_name": "Internal Claude",
                        "max_output_tokens": 32000,
                    },
                ]
            }
        )
    )
    settings.CHAT_MODELS_FILE = str(good)

    current = catalogue.catalogue_current()

    assert current.profile("anthropic/claude-sonnet-4.6").lifecycle.shutdown_at == (
        datetime.date(2027, 3, 1)
    )
    internal = current.profile("corp/claude-internal")
    assert (internal.display_name, internal.kind, internal.max_output_tokens) == (
        "Internal Claude",
        "adaptive",
        32000,
    )

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    settings.CHAT_MODELS_FILE = str(broken)
    assert _ids(catalogue.catalogue_current()) == [p.id for p in BUILT_IN]


@pytest.mark.django_db
def test_staff_offer_models_to_everyone_or_to_groups(keyed, make_user) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    testers = Group.objects.create(name="testers")
    bob.groups.add(testers)
    ModelOffer.objects.create(model_id="anthropic/claude-sonnet-4.6")
    ModelOffer.objects.create(model_id="anthropic/claude-opus-4-5").groups.add(testers)
    current = catalogue.catalogue_current()
    on = datetime.date(2026, 11, 26)

    def offered(user) -> list[str]:
        models = catalogue.models_offered_for_user(user=user, catalogue=current, on=on)
        return [p.id for p in models]

    assert offered(alice) == ["anthropic/claude-sonnet-4.6"]
    assert offered(bob) == ["anthropic/claude-sonnet-4.6", "anthropic/claude-opus-4-5"]


@pytest.mark.django_db
def test_a_new_conversation_takes_the_preferred_model_then_the_site_model(
    keyed, user, settings
) -> None:
    settings.CHAT_MODEL = "anthropic/claude-sonnet-4.6"
    assert services.conversation_create(owner=user).model == "anthropic/claude-sonnet-4.6"

    accounts_services.preferences_update(
        user=user, settings=turn_settings(model="anthropic/claude-opus-4-5")
    )
    assert services.conversation_create(owner=user).model == "anthropic/claude-opus-4-5"
