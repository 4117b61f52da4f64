"""Offline checks of the Bicep files in infra/ (no Bicep CLI and no Azure here).

Every .bicep file must parse with pycep-parser (the parser checkov uses), and main.bicep must
declare what the app needs to run on Flex Consumption without any key: the plan and app with the
`custom` runtime, its deployment container, the topic and the subscription to the Projector
through the Event Grid extension's webhook and system key, Application Insights, and each role
assignment of the managed identity, on the one resource it is for. Removing any of them fails a
test here. Run by scripts/check-infra.sh (and so by .ci/run):

    python -m unittest discover -s infra/tests -v
"""

from __future__ import annotations

import json
import re
import unittest
from pathlib import Path

from pycep import BicepParser

INFRA = Path(__file__).resolve().parent.parent
REPO = INFRA.parent

# Built-in role ids, written here independently of the Bicep file so a wrong id there fails.
ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "EventGrid Data Sender": "d5a91429-5739-47e2-a06b-3470a27159e7",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}

# (role, type of the resource it is scoped to, principal): what the app needs, and no more.
REQUIRED_ROLES = [
    ("Storage Blob Data Owner", "Microsoft.Storage/storageAccounts", "identity.properties.principalId"),
    ("Storage Table Data Contributor", "Microsoft.Storage/storageAccounts", "identity.properties.principalId"),
    ("EventGrid Data Sender", "Microsoft.EventGrid/topics", "identity.properties.principalId"),
    ("Monitoring Metrics Publisher", "Microsoft.Insights/components", "identity.properties.principalId"),
    (
        "Storage Blob Data Contributor",
        "Microsoft.Storage/storageAccounts/blobServices/containers",
        "topic.identity.principalId",
    ),
]

# App settings a Flex Consumption app must not have (the plan takes them from functionAppConfig
# or does not support them).
FLEX_FORBIDDEN_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_NODE_DEFAULT_VERSION",
}

# App settings read by the Functions host (or its Application Insights), not by the handler.
HOST_SETTINGS = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"}

# The handler's sources that name the app settings it reads (as `pub const X: &str = "..."`).
HANDLER_SETTING_SOURCES = ["src/config.rs", "src/notify/settings.rs", "src/identity.rs"]

# Settings that would carry a secret: none may be set (identity only).
SECRET_SETTINGS = {"AzureWebJobsStorage", "EventGridKeyValue", "EventGridKeySettingName"}


def parse(path: Path) -> dict:
    return BicepParser().parse(file_path=path)


def expr(node) -> str:
    """A parsed expression as text: property chains dotted (`identity.properties.principalId`),
    function calls as `name(...)`, plain values as they are."""
    if isinstance(node, dict) and "operator" in node:
        op = node["operator"]
        if op["type"] == "property_accessor":
            return f"{expr(op['operands']['operand_1'])}.{expr(op['operands']['operand_2'])}"
        return json.dumps(node, sort_keys=True, default=str)
    if isinstance(node, dict) and "function" in node:
        return f"{node['function']['type']}(...)"
    return str(node)


class MainTemplate(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.main = parse(INFRA / "main.bicep")
        cls.resources = cls.main["resources"]
        cls.variables = {k: v["value"] for k, v in cls.main.get("variables", {}).items()}

    def of_type(self, type_: str) -> dict:
        return {n: r for n, r in self.resources.items() if r["type"] == type_ and not r["existing"]}

    def one(self, type_: str) -> tuple[str, dict]:
        found = self.of_type(type_)
        self.assertEqual(len(found), 1, f"expected exactly one {type_}, found {sorted(found)}")
        return next(iter(found.items()))

    def interpolate(self, text: str) -> str:
        """Replaces `${variable}` with the variable's value when it is a plain string."""

        def sub(m):
            value = self.variables.get(m.group(1))
            return value if isinstance(value, str) else m.group(0)

        return re.sub(r"\$\{(\w+)\}", sub, text)

    def app_settings(self) -> dict[str, object]:
        _, app = self.one("Microsoft.Web/sites")
        settings = app["config"]["properties"]["siteConfig"]["appSettings"]
        return {self.interpolate(s["name"]): s["value"] for s in settings}

    def test_every_file_parses(self):
        files = sorted(INFRA.rglob("*.bicep"))
        self.assertGreaterEqual(len(files), 2)
        for path in files:
            with self.subTest(file=path.name):
                tree = parse(path)
                self.assertTrue(tree.get("resources"), f"{path.name} declares no resource")

    def test_flex_consumption_plan_and_custom_runtime(self):
        _, plan = self.one("Microsoft.Web/serverfarms")
        self.assertEqual(plan["config"]["sku"], {"name": "FC1", "tier": "FlexConsumption"})
        self.assertIs(plan["config"]["properties"]["reserved"], True)
        _, app = self.one("Microsoft.Web/sites")
        config = app["config"]
        self.assertEqual(config["kind"], "functionapp,linux")
        self.assertIs(config["properties"]["httpsOnly"], True)
        fac = config["properties"]["functionAppConfig"]
        self.assertEqual(fac["runtime"]["name"], "custom")
        storage = fac["deployment"]["storage"]
        self.assertEqual(storage["type"], "blobContainer")
        self.assertEqual(storage["authentication"]["type"], "UserAssignedIdentity")
        self.assertEqual(expr(storage["authentication"]["userAssignedIdentityResourceId"]), "identity.id")
        self.assertIn("identity.id", json.dumps(config["identity"]))

    def test_deployment_container_exists_and_is_private(self):
        containers = self.of_type("Microsoft.Storage/storageAccounts/blobServices/containers")
        _, app = self.one("Microsoft.Web/sites")
        value = app["config"]["properties"]["functionAppConfig"]["deployment"]["storage"]["value"]
        names = {expr(c["config"]["name"]) for c in containers.values()}
        self.assertIn("deploymentContainerName", names)
        self.assertIn("deploymentContainerName", value)
        for c in containers.values():
            self.assertEqual(c["config"]["properties"]["publicAccess"], "None")

    def test_storage_topic_and_insights_take_no_keys(self):
        _, storage = self.one("Microsoft.Storage/storageAccounts")
        props = storage["config"]["properties"]
        self.assertIs(props["allowSharedKeyAccess"], False)
        self.assertIs(props["allowBlobPublicAccess"], False)
        self.assertEqual(props["minimumTlsVersion"], "TLS1_2")
        _, topic = self.one("Microsoft.EventGrid/topics")
        self.assertIs(topic["config"]["properties"]["disableLocalAuth"], True)
        _, insights = self.one("Microsoft.Insights/components")
        self.assertIs(insights["config"]["properties"]["DisableLocalAuth"], True)

    def test_least_privilege_role_assignments(self):
        assignments = self.of_type("Microsoft.Authorization/roleAssignments")
        roles_by_var = {f"roles.{k}": v for k, v in self.variables["roles"].items()}
        found = []
        for name, ra in assignments.items():
            props = ra["config"]["properties"]
            role_ref = expr(props["roleDefinitionId"]["function"]["parameters"]["resource_name_1"])
            role_id = roles_by_var.get(role_ref, role_ref)
            scope = ra["config"].get("scope")
            self.assertIsNotNone(scope, f"{name} has no scope: assignments are per resource")
            self.assertIn(scope, self.resources, f"{name} is scoped to {scope}, not a resource")
            found.append((role_id, self.resources[scope]["type"], expr(props["principalId"])))
            self.assertEqual(props["principalType"], "ServicePrincipal")
        for role, scope_type, principal in REQUIRED_ROLES:
            with self.subTest(role=role, scope=scope_type):
                self.assertIn((ROLE_IDS[role], scope_type, principal), found)
        self.assertEqual(len(found), len(REQUIRED_ROLES), f"the role assignments are not exactly the required ones: {found}")

    def test_projector_subscription_through_the_event_grid_extension(self):
        modules = self.main.get("modules", {})
        subs = [m for m in modules.values() if m["detail"]["path"] == "projector-subscription.bicep"]
        self.assertEqual(len(subs), 1, "main.bicep must deploy projector-subscription.bicep")
        params = subs[0]["config"]["config"]["params"]
        self.assertEqual(expr(params["appName"]), "app.name")
        self.assertEqual(expr(params["topicName"]), "topic.name")

        sub_file = parse(INFRA / "projector-subscription.bicep")
        res = sub_file["resources"]
        subscriptions = [r for r in res.values() if r["type"] == "Microsoft.EventGrid/topics/eventSubscriptions"]
        self.assertEqual(len(subscriptions), 1)
        config = subscriptions[0]["config"]
        self.assertEqual(res[config["parent"]]["type"], "Microsoft.EventGrid/topics")
        destination = config["properties"]["destination"]
        self.assertEqual(destination["endpointType"], "WebHook")
        url = destination["properties"]["endpointUrl"]
        self.assertTrue(url.startswith("https://"), url)
        self.assertIn("/runtime/webhooks/eventgrid?functionName=${functionName}", url)
        self.assertIn(".listKeys().systemKeys.eventgrid_extension}", url)
        host = [r for r in res.values() if r["type"] == "Microsoft.Web/sites/host"]
        self.assertEqual(len(host), 1, "the key comes from the app's host resource")
        function = sub_file["parameters"]["functionName"]["default"]
        self.assertEqual(function, "Projector")
        bindings = json.loads((REPO / "functions" / function / "function.json").read_text())["bindings"]
        self.assertEqual([b["type"] for b in bindings], ["eventGridTrigger"])

    def test_no_secret_and_no_setting_flex_refuses(self):
        settings = self.app_settings()
        self.assertFalse(SECRET_SETTINGS & settings.keys(), "a secret-bearing setting is set")
        self.assertFalse(FLEX_FORBIDDEN_SETTINGS & settings.keys())
        for name, value in settings.items():
            text = json.dumps(value, default=str)
            for needle in ("AccountKey", "listKeys", "SharedAccessSignature", "aeg-sas"):
                self.assertNotIn(needle, text, f"{name} carries a secret")

    def test_identity_based_connections(self):
        settings = self.app_settings()
        for suffix in ("blobServiceUri", "tableServiceUri", "credential", "clientId"):
            self.assertIn(f"AzureWebJobsStorage__{suffix}", settings)
        self.assertEqual(settings["AzureWebJobsStorage__credential"], "managedidentity")
        self.assertEqual(expr(settings["AzureWebJobsStorage__clientId"]), "identity.properties.clientId")
        self.assertEqual(expr(settings["EventGridTopicEndpoint"]), "topic.properties.endpoint")

    def test_every_setting_is_one_the_handler_or_the_host_reads(self):
        constants = {}
        for source in HANDLER_SETTING_SOURCES:
            text = (REPO / source).read_text()
            for name, value in re.findall(r'pub const (\w+): &str\s*=\s*"([^"]*)";', text):
                constants[name] = value
        known = set(constants.values())
        parts = {v for k, v in constants.items() if k.endswith("_PART")}
        self.assertIn("tableServiceUri", parts, "the handler reads identity-based connections")
        connection = constants["DEFAULT_CONNECTION_SETTING"]
        separator = constants["CONNECTION_PART_SEPARATOR"]
        for name in self.app_settings():
            with self.subTest(setting=name):
                if name in HOST_SETTINGS:
                    continue
                if separator in name:
                    prefix, part = name.split(separator, 1)
                    self.assertEqual(prefix, connection, f"{name}: not a connection the handler uses")
                    self.assertIn(part, parts, f"{name}: the handler does not read {part}")
                else:
                    self.assertIn(name, known, f"{name} is read by neither the handler nor the host")
        settings = self.app_settings()
        self.assertEqual(expr(settings[constants["CLIENT_ID_SETTING"]]), "identity.properties.clientId")
        self.assertEqual(settings[constants["SCHEMA_SETTING"]], "notificationSchema")

    def test_outputs(self):
        outputs = self.main["outputs"]
        self.assertIn("appUrl", outputs)
        self.assertIn("topicEndpoint", outputs)
        for name in ("location", "baseName", "appName", "storageAccountName", "topicName"):
            self.assertIn(name, self.main["parameters"])


if __name__ == "__main__":
    unittest.main()
