import pytest

from controllers.access import KEPT_SUFFIX, AccessControl
from controllers.failures import AccessDeniedError
from controllers.policy import AccessRequest, evaluate, namespace_denied, prefetch_denied
from controllers.resources import ONEPASSWORDACCESSPOLICIES
from onepassword_access.models import Item, Ref
from onepassword_access.resolve import ResolvedItem


def policy(name, namespaces, vaults):
    return {"metadata": {"name": name}, "spec": {"namespaces": namespaces, "vaults": vaults}}


def request(
    namespace="team-a", labels=None, vault_name="Team A", vault_id="aaaaaaaaaaaaaaaaaaaaaaaaaa", title="db", tags=()
):
    return AccessRequest(namespace, labels or {}, vault_id, vault_name, title, list(tags))


def test_no_policy_allows_everything():
    assert evaluate([], request()).allowed


def test_namespace_by_name_and_vault_by_name_case_insensitively():
    policies = [policy("a", {"names": ["team-a"]}, [{"vault": "team a"}])]
    decision = evaluate(policies, request())
    assert decision.allowed and decision.policy == "a"


def test_vault_by_id():
    policies = [policy("a", {"names": ["team-a"]}, [{"vault": "aaaaaaaaaaaaaaaaaaaaaaaaaa"}])]
    assert evaluate(policies, request(vault_name="Renamed")).allowed


def test_deny_by_default_names_the_gap():
    policies = [policy("a", {"names": ["team-b"]}, [{"vault": "Team A"}])]
    decision = evaluate(policies, request())
    assert not decision.allowed
    assert decision.message == 'no OnePasswordAccessPolicy grants namespace "team-a" access to vault "Team A"'


def test_label_selected_namespace():
    policies = [policy("a", {"selector": {"matchLabels": {"team": "a"}}}, [{"vault": "Team A"}])]
    assert evaluate(policies, request(labels={"team": "a"})).allowed
    assert not evaluate(policies, request(labels={"team": "b"})).allowed
    expressions = {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "c"]}]}
    policies = [policy("b", {"selector": expressions}, [{"vault": "Team A"}])]
    assert evaluate(policies, request(labels={"team": "c"})).allowed
    assert not evaluate(policies, request(labels={})).allowed


def test_tag_and_prefix_limits():
    policies = [policy("a", {"names": ["team-a"]}, [{"vault": "Team A", "tags": ["k8s"], "titlePrefix": "app-"}])]
    assert evaluate(policies, request(title="app-db", tags=["k8s", "x"])).allowed
    untagged = evaluate(policies, request(title="app-db", tags=["x"]))
    assert not untagged.allowed and "only items tagged k8s" in untagged.message
    unprefixed = evaluate(policies, request(title="db", tags=["k8s"]))
    assert not unprefixed.allowed and "title starts with 'app-'" in unprefixed.message
    assert untagged.item_limited and unprefixed.item_limited
    assert not evaluate(policies, request(vault_name="Team B")).item_limited


def test_any_policy_suffices():
    policies = [
        policy("narrow", {"names": ["team-a"]}, [{"vault": "Team A", "tags": ["never"]}]),
        policy("wide", {"names": ["team-a"]}, [{"vault": "Team A"}]),
    ]
    assert evaluate(policies, request()).policy == "wide"


def test_invalid_selector_grants_nothing():
    bad = {"matchExpressions": [{"key": "team", "operator": "Near"}]}
    assert not evaluate([policy("a", {"selector": bad}, [{"vault": "Team A"}])], request()).allowed


def test_a_namespace_no_policy_selects_is_denied_before_any_item_is_known():
    policies = [policy("a", {"selector": {"matchLabels": {"team": "a"}}}, [{"vault": "Team A"}])]
    assert namespace_denied([], "team-b", {}) is None
    assert namespace_denied(policies, "team-a", {"team": "a"}) is None
    denied = namespace_denied(policies, "team-b", {"team": "b"})
    assert denied is not None and not denied.allowed
    assert denied.message == 'no OnePasswordAccessPolicy grants namespace "team-b" access to any vault'


def test_an_empty_selector_selects_no_namespace():
    """Explicit (issue 16): ``selector: {}`` would grant every namespace in Kubernetes' usual reading."""
    policies = [policy("a", {"selector": {}}, [{"vault": "Team A"}])]
    assert not evaluate(policies, request(labels={"team": "a"})).allowed
    assert namespace_denied(policies, "team-a", {"team": "a"}) is not None
    every = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]}
    policies = [policy("b", {"selector": every}, [{"vault": "Team A"}])]
    assert evaluate(policies, request(labels={"kubernetes.io/metadata.name": "team-a"})).allowed


def test_a_namespace_missing_from_the_cache_is_selected_by_no_selector():
    """Its missing labels would satisfy DoesNotExist and NotIn: a creation race must not grant."""
    absent = {"matchExpressions": [{"key": "restricted", "operator": "DoesNotExist"}]}
    policies = [policy("a", {"selector": absent, "names": ["named"]}, [{"vault": "Team A"}])]
    assert evaluate(policies, request(labels={})).allowed
    uncached = AccessRequest("team-a", None, "aaaaaaaaaaaaaaaaaaaaaaaaaa", "Team A", "db", [])
    assert not evaluate(policies, uncached).allowed
    assert evaluate(policies, AccessRequest("named", None, "aaaaaaaaaaaaaaaaaaaaaaaaaa", "Team A", "db", [])).allowed


def test_prefetch_denies_what_no_resolution_could_allow():
    policies = [
        policy("a", {"names": ["team-a"]}, [{"vault": "Team A", "titlePrefix": "app-"}]),
        policy("b", {"names": ["team-b"]}, [{"vault": "aaaaaaaaaaaaaaaaaaaaaaaaaa"}]),
    ]
    assert prefetch_denied(policies, "team-a", {}, "team a", "app-db") is None  # names: any case
    assert prefetch_denied(policies, "team-a", {}, "Team A", None) is None  # an item by id: title unknown
    wrong_vault = prefetch_denied(policies, "team-a", {}, "Team B", "app-db")
    assert wrong_vault is not None and 'vault "Team B"' in wrong_vault.message
    wrong_title = prefetch_denied(policies, "team-a", {}, "Team A", "db")
    assert wrong_title is not None and "title starts with 'app-'" in wrong_title.message
    assert prefetch_denied(policies, "team-c", {}, "Team A", "app-db") is not None
    # a vault listed by id may be the one a name resolves to: only the resolved item can tell
    assert prefetch_denied(policies, "team-b", {}, "Whatever", "db") is None


class FakeInformer:
    def __init__(self, objects):
        self.objects = objects

    def add_handler(self, handler):
        for obj in self.objects:
            handler.on_add(obj, True)

    def list(self):
        return list(self.objects)


class FakeCache:
    def __init__(self, policies):
        self.policies = FakeInformer(policies)

    def informer(self, resource, *, optional=False):
        assert resource == ONEPASSWORDACCESSPOLICIES and optional
        return self.policies


class FakeNamespaces:
    informers = ()

    def labels(self, namespace):
        return {}


ASKED, ELSEWHERE = "a" * 26, "b" * 26


def resolved_from(item_vault: str) -> ResolvedItem:
    """The item ``vaults/Team A/items/db`` resolved to: the path's vault is ASKED, Connect answered from
    ``item_vault``."""
    item = Item(id="c" * 26, title="db", vault=Ref(id=item_vault), version=1)
    return ResolvedItem(item=item, vault_id=ASKED, files={})


@pytest.mark.parametrize(
    "policies", [[], [policy("a", {"names": ["team-a"]}, [{"vault": "Team A"}, {"vault": ELSEWHERE}])]]
)
def test_an_item_returned_from_another_vault_than_asked_is_denied(policies):
    """Whatever the policies (none: allow all; or one granting both vaults), an item whose own vault is not the
    one the path resolved to is refused: the decision was made for the vault asked for."""
    access = AccessControl(FakeCache(policies), FakeNamespaces())
    access.authorize("team-a", "vaults/Team A/items/db", resolved_from(ASKED), kept=False)  # the same vault: allowed
    with pytest.raises(AccessDeniedError) as denied:
        access.authorize("team-a", "vaults/Team A/items/db", resolved_from(ELSEWHERE), kept=False)
    assert str(denied.value) == (
        f'Connect returned item "db" from vault "{ELSEWHERE}", not from vault "{ASKED}" that the path resolved to'
    )
    with pytest.raises(AccessDeniedError, match=f"^access revoked: .*; {KEPT_SUFFIX}$"):
        access.authorize("team-a", "vaults/Team A/items/db", resolved_from(ELSEWHERE), kept=True)
