"""The moto server as chatctl's tests run it, with the fixes they need.

moto emulates AWS well enough for chatctl, with gaps. Each gap is closed here,
before the server starts, so that product code stays right for real AWS:

- DynamoDB: moto applies a TransactWriteItems by copying the table and
  restoring the copy when a condition fails. Run concurrently, one request's
  restore can undo another's writes. Real DynamoDB transactions are atomic and
  isolated, so every DynamoDB operation is serialised here. Pinned by
  chat-core's test the_connection_limit_holds_under_concurrent_connects, which
  fails on a plain moto server (over-admits) and passes with this launcher.

- DynamoDB: moto backs up a TransactWriteItems by deep-copying each table
  it names, once per item: a connect (two items) copied the whole connections
  table twice, so with 1,000 connections open a connect took about 60 ms of
  the emulator's single thread. Here a transaction backs up only the items it
  touches and puts them back when it is cancelled (moto's own restore, of the
  same table object, then changes nothing). Pinned by chat-core's connection
  tests (a cancelled connect leaves no record and no count) and measured by
  scripts/bench-dev (1,000 connects).

- API Gateway v2, GetAuthorizers (GET /v2/apis/{apiId}/authorizers): moto has
  the path but no handler (500). chatctl lists authorizers to find its own.
  Returns 200 {"items": [...]} with moto's own authorizer JSON.

- API Gateway v2, GetRouteResponses (GET /v2/apis/{apiId}/routes/{routeId}/
  routeresponses): moto stores route responses (CreateRouteResponse) but has
  no handler to list them (500). chatctl lists them to check that the
  keep-alive route is two-way. Returns 200 {"items": [...]} with moto's own
  route response JSON.

- API Gateway v2, deployments (CreateDeployment POST, GetDeployments GET on
  /v2/apis/{apiId}/deployments; GetDeployment GET, DeleteDeployment DELETE on
  /v2/apis/{apiId}/deployments/{deploymentId}): moto has neither the paths
  (404) nor a model. chatctl must deploy after changing routes, integrations
  or authorizers (aws-facts.md §8). As on AWS: CreateDeployment answers 201
  with deploymentId, deploymentStatus "DEPLOYED", createdDate, description,
  autoDeployed false; it fails with BadRequestException on an API without
  routes; with a stageName it points that stage at the new deployment
  (NotFoundException if there is no such stage). DeleteDeployment answers 204.
  Deployments live on the API, so DeleteApi takes them.

- API Gateway v2, UpdateStage (PATCH /v2/apis/{apiId}/stages/{stageName}):
  moto has the path but no handler (500), and its stages do not carry a
  deploymentId at all. chatctl points the stage at each new deployment. Sets
  deploymentId (NotFoundException for an unknown one), description,
  autoDeploy, clientCertificateId, accessLogSettings and
  defaultRouteSettings (replaced whole: on AWS an omitted throttling value
  becomes 0); merges routeSettings and stageVariables key by key. Answers
  200 with the stage; GetStage/GetStages (and CreateStage given a
  deploymentId) then show deploymentId.

- API Gateway v2, DeleteRouteSettings (DELETE
  /v2/apis/{apiId}/stages/{stageName}/routesettings/{routeKey}): moto has
  neither path nor handler (404). chatctl removes a route's own throttling
  with it. Answers 204, or NotFoundException for a route without settings.

- API Gateway v2, DeleteAccessLogSettings (DELETE
  /v2/apis/{apiId}/stages/{stageName}/accesslogsettings): moto has neither
  path nor handler (404). chatctl turns a stage's access logs off with it.
  Answers 204; GetStage then shows no accessLogSettings.

- API Gateway v2, CreateRoute and CreateStage: moto makes a second route
  with a key the API has, and replaces a stage by one of the same name. AWS
  answers 409 ConflictException "Route with key K already exists for this
  API" (anomalyco/sst #5031) and "Stage already exists"
  (terraform-provider-aws #1153). chatctl adopts what a killed run's create
  left (aws-facts.md §11). Here they are refused the same way.

- API Gateway v2, route settings (CreateStage and UpdateStage
  routeSettings): moto accepts any route key. AWS answers 404
  NotFoundException "Unable to find Route by key K within the provided
  RouteSettings" for a key the API has no route for
  (terraform-aws-modules/terraform-aws-apigateway-v2 PR #80; aws-facts.md
  §11). Here it does.

- API Gateway v2, execution logging: with a logging level set (ERROR or
  INFO, stage-wide or for a route), API Gateway itself makes a log group for
  the stage, untagged, never expiring (API Gateway developer guide,
  WebSocket logging; aws-facts.md §11). moto makes none. Here CreateStage and
  UpdateStage make API-Gateway-Execution-Logs_{apiId}/{stage} (REST APIs'
  documented name; AWS makes it at the first logged request, here at once).

- DynamoDB, TagResource: moto appends the tags it is given, so a key tagged
  again holds two values. On AWS a tag given again replaces the old value
  (DynamoDB API reference, TagResource). Here it does.

- API Gateway v2, TagResource / UntagResource / GetTags of a stage
  (arn:...:apigateway:REGION::/apis/ID/stages/NAME): moto has no path for
  them (404), and would keep them apart from the stage, where GetStage never
  shows them. chatctl tags its stage in
  place when the tags in chatctl.toml change. Here they are the stage's own
  tags, which GetStage shows.

- API Gateway v2, custom domain names (CreateDomainName, GetDomainName,
  GetDomainNames): moto echoes each domainNameConfiguration as given. AWS
  answers each with what the Route 53 alias record needs: apiGatewayDomainName
  (the regional target, d-XXXXXXXXXX.execute-api.REGION.amazonaws.com) and
  hostedZoneId (the region's API Gateway hosted zone, AWS General Reference,
  "API Gateway endpoints"), with domainNameStatus "AVAILABLE", endpointType
  (REGIONAL unless given) and securityPolicy (TLS_1_2 unless given), as in
  aws/aws-cli #5059. chatctl's [domain] points its alias record at them.
  Here each configuration gets them; the target is drawn once per domain
  name and kept; a region outside the table gets a placeholder zone.

- API Gateway v2, CreateApiMapping: moto maps any API to any domain name.
  On AWS a domain name serves WebSocket APIs or HTTP (and REST) APIs, never
  both (API Gateway developer guide, "Map API stages to a custom domain name
  for WebSocket APIs", Restrictions), refused with BadRequestException
  (AWS's words for it through API Gateway v1, serverless-domain-manager
  #596). Here it is, in CreateApiMapping and UpdateApiMapping. And one
  mapping per path: a second CreateApiMapping of a key the domain name
  maps already gets ConflictException (moto overwrites or adds one).

- API Gateway v2, UpdateApiMapping (PATCH /v2/domainnames/{domainName}/
  apimappings/{apiMappingId}) and UpdateDomainName (PATCH
  /v2/domainnames/{domainName}): moto has the paths but no handlers (500).
  chatctl moves its mapping to a new stage and changes a domain name's
  certificate in place. UpdateApiMapping sets apiId, stage and apiMappingKey
  (keeping the mapping's id) and answers 200 with the mapping;
  UpdateDomainName replaces the configurations (filled as above, same
  target) and mutualTlsAuthentication when given and answers 200 with the
  domain name; NotFoundException for an unknown domain name or mapping.

- ACM, a requested certificate's DNS validation: moto issues it 60 s
  (MOTO_ACM_VALIDATION_WAIT) after the request, record or not. ACM issues it
  once the CNAME record DescribeCertificate names is in public DNS, usually
  within minutes (ACM user guide, "DNS validation"); never without it.
  Here it is ISSUED only once a hosted zone of the account has that CNAME
  record, and MOTO_ACM_VALIDATION_WAIT seconds after it was first seen.

- ACM, DeleteCertificate of a certificate in use: moto deletes it. AWS
  refuses with ResourceInUseException while a resource uses it (ACM API
  reference, DeleteCertificate), and an API Gateway domain name does until
  it is deleted (and for a while after: aws-cdk #36265, terraform-provider-
  aws #3866). Here a domain name's certificates are in use (InUseBy) from
  its CreateDomainName or UpdateDomainName until its DeleteDomainName or
  another certificate.

- API Gateway v2, DeleteDomainName: moto deletes the domain name's API
  mappings while iterating over them, so a domain name with a mapping fails
  with HTTP 500 and stays. Here it goes, with its mappings, as moto means
  it to.

- CloudWatch over Smithy RPC v2 CBOR: the Rust SDK calls CloudWatch with
  that protocol (POST /service/GraniteServiceVersion20100801/operation/OP,
  header smithy-protocol: rpc-v2-cbor, a CBOR body, gzip when large), which
  moto does not route (404). CloudWatch also speaks the AWS JSON 1.0
  protocol, which moto does: each such request is handed to moto as JSON
  and its answer returned as CBOR, with timestamps and numbers typed as the
  service model says (Smithy RPC v2 CBOR protocol specification).

- CloudWatch, GetMetricData: moto computes Sum, Average, Minimum, Maximum
  and SampleCount only; a percentile such as p99 makes it answer HTTP 500.
  `chatctl top` asks for IntegrationLatency and Duration p50/p99. Here a
  percentile is the nearest-rank value of the period's data points (values
  put with Values/Counts or Value), and a period with none has no data
  point, as on AWS (CloudWatch User Guide, "Percentiles").

The API Gateway v2 additions and the percentiles are pinned by testkit/tests/moto_extensions.rs,
which drives them through the Rust SDK; every test there fails on a plain
moto server.

moto picks the handler method from the botocore model by HTTP method and path
(so PATCH on a stage is update_stage, POST on deployments is
create_deployment): the API Gateway v2 gaps need only methods on moto's
response and backend classes, and url paths for the deployments. moto's
API Gateway v1 url table copies v2's at import, so new paths go into both.
moto takes a handler's status code from a "status" header, not from the
returned tuple (its own v2 handlers answer 200 even where AWS answers 201 or
204); ours set that header.

Usage: python moto_server.py [moto_server options, e.g. -H 127.0.0.1 -p 5000]
"""

import base64
import copy
import datetime
import functools
import gzip
import inspect
import io
import json
import math
import os
import re
import string
import sys
import threading
import time
from urllib.parse import unquote

import botocore.session
import cbor2
from moto.apigateway import urls as apigateway_urls
from moto.apigatewayv2 import urls as apigatewayv2_urls
from moto.apigatewayv2.exceptions import APIGatewayV2Error, ApiMappingNotFound, BadRequestException
from moto.apigatewayv2.models import Api, ApiGatewayV2Backend, DomainName, Stage
from moto.apigatewayv2.responses import ApiGatewayV2Response
from moto import settings as moto_settings
from moto.acm.models import AWSCertificateManagerBackend, CertBundle, acm_backends
from moto.cloudwatch.models import CloudWatchBackend, Statistics
from moto.core.exceptions import AWSError
from moto.route53.models import route53_backends
from moto.core.utils import iso_8601_datetime_without_milliseconds, utcnow
from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.exceptions import MockValidationException, TransactionCanceledException
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.logs.models import logs_backends
from moto.moto_api._internal import mock_random as random
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import main


def _graft(source, target):
    """Copies the methods defined in class `source` onto moto's class `target`."""
    for name, value in vars(source).items():
        if inspect.isfunction(value):
            setattr(target, name, value)


def _add_url_path(pattern):
    """Routes an API Gateway v2 path pattern to moto's v2 handler."""
    for table in (apigatewayv2_urls.url_paths, apigateway_urls.url_paths):
        table[pattern] = ApiGatewayV2Response.dispatch


def _request_json(response):
    return json.loads(response.body or "{}")


def _reply(status, body=None):
    """A handler's answer. moto takes the status from the "status" header and
    ignores the tuple's first element (so moto's own v2 handlers all answer 200,
    whatever AWS answers)."""
    return status, {"status": status}, "" if body is None else json.dumps(body)


# --- DynamoDB: serialise every operation -----------------------------------

_dynamodb_lock = threading.RLock()


def _serialised(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _dynamodb_lock:
            return method(*args, **kwargs)

    return wrapper


for _name, _value in list(vars(DynamoDBBackend).items()):
    if callable(_value) and not _name.startswith("_"):
        setattr(DynamoDBBackend, _name, _serialised(_value))


# --- DynamoDB: transactions back up the items they touch, not whole tables --


class _CopyExceptTables:
    """moto.dynamodb.models' `copy` module: a Table is not copied (the
    transaction's items are backed up instead, below); anything else is."""

    @staticmethod
    def deepcopy(value, memo=None):
        if isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)


dynamodb_models.copy = _CopyExceptTables
_moto_transact_write_items = DynamoDBBackend.transact_write_items


def _transact_write_items(self, transact_items):
    with _dynamodb_lock:
        backups = []
        for entry in transact_items:
            try:
                _, op = next(iter(entry.items()))
                table = self.get_table(op["TableName"])
                key = op["Item"] if "Item" in op else op["Key"]
                hash_key, range_key = self.get_keys_value(table, key)
                old = table.get_item(hash_key, range_key)
                backups.append((table, hash_key, range_key, copy.deepcopy(old)))
            except Exception:  # noqa: BLE001 moto's own checks report a bad item
                continue
        try:
            return _moto_transact_write_items(self, transact_items)
        except (TransactionCanceledException, MockValidationException):
            for table, hash_key, range_key, old in reversed(backups):
                if range_key is None:
                    if old is None:
                        table.items.pop(hash_key, None)
                    else:
                        table.items[hash_key] = old
                elif old is None:
                    table.items.get(hash_key, {}).pop(range_key, None)
                else:
                    table.items[hash_key][range_key] = old
            raise


DynamoDBBackend.transact_write_items = _transact_write_items


# --- API Gateway v2: GetAuthorizers ----------------------------------------


class _BackendGetAuthorizers:
    def get_authorizers(self, api_id):
        return list(self.get_api(api_id).authorizers.values())


class _ResponseGetAuthorizers:
    def get_authorizers(self):
        authorizers = self.apigatewayv2_backend.get_authorizers(self.uri_match["apiId"])
        return _reply(200, {"items": [a.to_json() for a in authorizers]})


_graft(_BackendGetAuthorizers, ApiGatewayV2Backend)
_graft(_ResponseGetAuthorizers, ApiGatewayV2Response)


# --- API Gateway v2: GetRouteResponses (a two-way route's responses) -------


class _ResponseGetRouteResponses:
    def get_route_responses(self):
        route = self.apigatewayv2_backend.get_route(self.uri_match["apiId"], self.uri_match["routeId"])
        return _reply(200, {"items": [r.to_json() for r in route.route_responses.values()]})


_graft(_ResponseGetRouteResponses, ApiGatewayV2Response)


# --- API Gateway v2: deployments -------------------------------------------


class Deployment:
    def __init__(self, description):
        alphabet = string.ascii_lowercase + string.digits
        self.id = "".join(random.choice(alphabet) for _ in range(6))
        self.description = description
        self.created = utcnow()

    def to_json(self):
        dct = {
            "deploymentId": self.id,
            "deploymentStatus": "DEPLOYED",
            "createdDate": iso_8601_datetime_without_milliseconds(self.created),
            "autoDeployed": False,
        }
        if self.description is not None:
            dct["description"] = self.description
        return dct


class DeploymentNotFound(APIGatewayV2Error):
    code = 404

    def __init__(self, deployment_id):
        super().__init__(
            "NotFoundException",
            f"Invalid Deployment identifier specified {deployment_id}",
        )


_moto_api_init = Api.__init__


class _ApiWithDeployments:
    def __init__(self, *args, **kwargs):
        _moto_api_init(self, *args, **kwargs)
        self.deployments = {}

    def get_deployment(self, deployment_id):
        if deployment_id not in self.deployments:
            raise DeploymentNotFound(deployment_id)
        return self.deployments[deployment_id]


class _BackendDeployments:
    def create_deployment(self, api_id, description, stage_name):
        api = self.get_api(api_id)
        if not api.routes:
            # The message AWS gives for each protocol.
            if api.protocol_type == "WEBSOCKET":
                message = "At least one route is required before deploying the Api"
            else:
                message = "Unable to deploy API because no routes exist in this API"
            raise BadRequestException(message)
        # An unknown stage: moto's NotFoundException, as on AWS.
        stage = api.get_stage(stage_name) if stage_name is not None else None
        deployment = Deployment(description)
        api.deployments[deployment.id] = deployment
        if stage is not None:
            stage.deployment_id = deployment.id
            stage.updated = utcnow()
        return deployment

    def get_deployments(self, api_id):
        return list(self.get_api(api_id).deployments.values())

    def get_deployment(self, api_id, deployment_id):
        return self.get_api(api_id).get_deployment(deployment_id)

    def delete_deployment(self, api_id, deployment_id):
        api = self.get_api(api_id)
        api.get_deployment(deployment_id)
        del api.deployments[deployment_id]


class _ResponseDeployments:
    def create_deployment(self):
        params = _request_json(self)
        deployment = self.apigatewayv2_backend.create_deployment(
            self.uri_match["apiId"], params.get("description"), params.get("stageName")
        )
        return _reply(201, deployment.to_json())

    def get_deployments(self):
        deployments = self.apigatewayv2_backend.get_deployments(self.uri_match["apiId"])
        return _reply(200, {"items": [d.to_json() for d in deployments]})

    def get_deployment(self):
        deployment = self.apigatewayv2_backend.get_deployment(
            self.uri_match["apiId"], self.uri_match["deploymentId"]
        )
        return _reply(200, deployment.to_json())

    def delete_deployment(self):
        self.apigatewayv2_backend.delete_deployment(
            self.uri_match["apiId"], self.uri_match["deploymentId"]
        )
        return _reply(204)


_graft(_ApiWithDeployments, Api)
_graft(_BackendDeployments, ApiGatewayV2Backend)
_graft(_ResponseDeployments, ApiGatewayV2Response)
_add_url_path("{0}/v2/apis/(?P<api_id>[^/]+)/deployments$")
_add_url_path("{0}/v2/apis/(?P<api_id>[^/]+)/deployments/(?P<deployment_id>[^/]+)$")


# --- API Gateway v2: UpdateStage, and stages that carry a deploymentId ------


_moto_stage_init = Stage.__init__
_moto_stage_to_json = Stage.to_json


class _StageWithDeploymentId:
    def __init__(self, api, config):
        _moto_stage_init(self, api, config)
        self.deployment_id = config.get("deploymentId")

    def to_json(self):
        dct = _moto_stage_to_json(self)
        if self.deployment_id is not None:
            dct["deploymentId"] = self.deployment_id
        return dct


# UpdateStage request field -> Stage attribute, replaced as a whole. On AWS
# a defaultRouteSettings without a throttling value sets it to 0
# (terraform-aws-modules/terraform-aws-apigateway-v2 #45): the object is
# replaced, not merged.
_STAGE_REPLACED = {
    "deploymentId": "deployment_id",
    "description": "description",
    "autoDeploy": "auto_deploy",
    "clientCertificateId": "client_certificate_id",
    "accessLogSettings": "access_log_settings",
    "defaultRouteSettings": "default_route_settings",
}
# UpdateStage request field -> Stage attribute, a map merged key by key
# (routeSettings: each route's object replaced; DeleteRouteSettings removes
# one, as terraform-provider-aws does before an UpdateStage).
_STAGE_MERGED = {
    "routeSettings": "route_settings",
    "stageVariables": "stage_variables",
}


class _BackendUpdateStage:
    def update_stage(self, api_id, stage_name, changes):
        api = self.get_api(api_id)
        stage = api.get_stage(stage_name)
        _check_route_settings(api, changes.get("routeSettings"))
        if changes.get("deploymentId") is not None:
            api.get_deployment(changes["deploymentId"])
        for field, attribute in _STAGE_REPLACED.items():
            if field in changes:
                setattr(stage, attribute, changes[field])
        for field, attribute in _STAGE_MERGED.items():
            if field in changes:
                merged = {**(getattr(stage, attribute) or {}), **changes[field]}
                setattr(stage, attribute, merged)
        stage.updated = utcnow()
        _make_execution_log_group(self, api_id, stage)
        return stage


class RouteSettingsNotFound(APIGatewayV2Error):
    code = 404

    def __init__(self, route_key):
        super().__init__("NotFoundException", f"Unable to find route settings for route {route_key}")


class _ResponseUpdateStage:
    def update_stage(self):
        stage = self.apigatewayv2_backend.update_stage(
            self.uri_match["apiId"], self.uri_match["stageName"], _request_json(self)
        )
        return _reply(200, stage.to_json())

    def delete_access_log_settings(self):
        api = self.apigatewayv2_backend.get_api(self.uri_match["apiId"])
        stage = api.get_stage(self.uri_match["stageName"])
        stage.access_log_settings = None
        stage.updated = utcnow()
        return _reply(204)

    def delete_route_settings(self):
        api = self.apigatewayv2_backend.get_api(self.uri_match["apiId"])
        stage = api.get_stage(self.uri_match["stageName"])
        route_key = unquote(self.uri_match["routeKey"])
        if route_key not in (stage.route_settings or {}):
            raise RouteSettingsNotFound(route_key)
        del stage.route_settings[route_key]
        stage.updated = utcnow()
        return _reply(204)


# --- API Gateway v2: a route key and a stage name are taken once; route
# settings name routes the API has ---------------------------------------------


class _Conflict(APIGatewayV2Error):
    code = 409

    def __init__(self, message):
        super().__init__("ConflictException", message)


class _RouteNotFound(APIGatewayV2Error):
    code = 404

    def __init__(self, route_key):
        super().__init__(
            "NotFoundException", f"Unable to find Route by key {route_key} within the provided RouteSettings"
        )


def _check_route_settings(api, route_settings):
    keys = {route.route_key for route in api.routes.values()}
    for route_key in route_settings or {}:
        if route_key not in keys:
            raise _RouteNotFound(route_key)


_moto_api_create_route = Api.create_route
_moto_api_create_stage = Api.create_stage


class _ApiTakenOnce:
    def create_route(self, *args, **kwargs):
        route_key = kwargs.get("route_key")
        if any(route.route_key == route_key for route in self.routes.values()):
            raise _Conflict(f"Route with key {route_key} already exists for this API")
        return _moto_api_create_route(self, *args, **kwargs)

    def create_stage(self, config):
        if config.get("stageName") in self.stages:
            raise _Conflict("Stage already exists")
        _check_route_settings(self, config.get("routeSettings"))
        return _moto_api_create_stage(self, config)


_graft(_ApiTakenOnce, Api)


def _logs_execution(stage):
    settings = [stage.default_route_settings or {}, *(stage.route_settings or {}).values()]
    return any(s.get("loggingLevel") in ("ERROR", "INFO") for s in settings)


def _make_execution_log_group(backend, api_id, stage):
    if not _logs_execution(stage):
        return
    logs = logs_backends[backend.account_id][backend.region_name]
    name = f"API-Gateway-Execution-Logs_{api_id}/{stage.name}"
    if name not in logs.groups:
        logs.create_log_group(name, {})


_moto_backend_create_stage = ApiGatewayV2Backend.create_stage


class _BackendExecutionLogs:
    def create_stage(self, api_id, config):
        stage = _moto_backend_create_stage(self, api_id, config)
        _make_execution_log_group(self, api_id, stage)
        return stage
_graft(_StageWithDeploymentId, Stage)
_graft(_BackendUpdateStage, ApiGatewayV2Backend)
_graft(_BackendExecutionLogs, ApiGatewayV2Backend)
_graft(_ResponseUpdateStage, ApiGatewayV2Response)
_add_url_path("{0}/v2/apis/(?P<apiId>[^/]+)/stages/(?P<stageName>[^/]+)/routesettings/(?P<routeKey>[^/]+)$")
_add_url_path("{0}/v2/apis/(?P<apiId>[^/]+)/stages/(?P<stageName>[^/]+)/accesslogsettings$")


# --- DynamoDB: a tag given again replaces the old value ---------------------


class _BackendTagsReplaced:
    def tag_resource(self, arn, tags):
        for table in self.tables.values():
            if table.table_arn == arn:
                table.tags = [tag for tag in table.tags if tag["Key"] not in tags]
                table.tags.extend({"Key": key, "Value": value} for key, value in tags.items())


_graft(_BackendTagsReplaced, DynamoDBBackend)
DynamoDBBackend.tag_resource = _serialised(DynamoDBBackend.tag_resource)


# --- API Gateway v2: tags of a stage are the stage's ------------------------

_moto_tag_resource = ApiGatewayV2Backend.tag_resource
_moto_untag_resource = ApiGatewayV2Backend.untag_resource
_moto_get_tags = ApiGatewayV2Backend.get_tags


def _stage_of(backend, resource_arn):
    """The stage a tagging ARN names, or None for any other resource."""
    _, _, path = resource_arn.partition("::")
    parts = path.strip("/").split("/")
    if len(parts) == 4 and parts[0] == "apis" and parts[2] == "stages":
        return backend.get_api(parts[1]).get_stage(parts[3])
    return None


class _BackendStageTags:
    def tag_resource(self, resource_arn, tags):
        stage = _stage_of(self, resource_arn)
        if stage is None:
            return _moto_tag_resource(self, resource_arn, tags)
        stage.tags = {**(stage.tags or {}), **(tags or {})}

    def untag_resource(self, resource_arn, tag_keys):
        stage = _stage_of(self, resource_arn)
        if stage is None:
            return _moto_untag_resource(self, resource_arn, tag_keys)
        stage.tags = {k: v for k, v in (stage.tags or {}).items() if k not in tag_keys}

    def get_tags(self, resource_id):
        stage = _stage_of(self, resource_id)
        if stage is None:
            return _moto_get_tags(self, resource_id)
        return dict(stage.tags or {})


_graft(_BackendStageTags, ApiGatewayV2Backend)
# moto routes tagging paths of APIs and VPC links only: a stage's is a 404.
_add_url_path("{0}/v2/tags/(?P<resource_arn_pt1>[^/]+)/apis/(?P<api_id>[^/]+)/stages/(?P<stage_name>[^/]+)$")


# --- API Gateway v2: custom domain names as AWS answers them ----------------

# The regional API Gateway hosted zone of each region: the zone of an alias
# record to a regional custom domain name (AWS General Reference, "API
# Gateway endpoints and quotas").
_APIGATEWAY_HOSTED_ZONES = {
    "us-east-1": "Z1UJRXOUMOOFQ8",
    "us-east-2": "ZOJJZC49E0EPZ",
    "us-west-1": "Z2MUQ32089INYE",
    "us-west-2": "Z2OJLYMUO9EFXC",
    "eu-west-1": "ZLY8HYME6SFDD",
    "eu-west-2": "ZJ5UAJN8Y3Z2Q",
    "eu-central-1": "Z1U9ULNL0V5AJ3",
    "ap-northeast-1": "Z1YSHQZHG15GKL",
    "ap-southeast-1": "ZL327KTPIQFUL",
    "ap-southeast-2": "Z2RPCDW04V8134",
}
# Any other region's: shaped like a hosted zone id, and no real one.
_PLACEHOLDER_HOSTED_ZONE = "Z0EMULATEDAPIGATEWAY"

_moto_domain_name_init = DomainName.__init__


def _domain_name_configurations(domain, configurations):
    """The configurations as AWS answers them: the output fields set, the
    optional inputs defaulted, the rest as given."""
    filled = []
    for configuration in configurations or [{}]:
        configuration = {"endpointType": "REGIONAL", "securityPolicy": "TLS_1_2", **configuration}
        configuration.update(
            apiGatewayDomainName=domain.api_gateway_domain_name,
            hostedZoneId=_APIGATEWAY_HOSTED_ZONES.get(domain.region_name, _PLACEHOLDER_HOSTED_ZONE),
            domainNameStatus="AVAILABLE",
        )
        filled.append(configuration)
    return filled


class _DomainNameAsOnAws:
    def __init__(self, domain_name, domain_name_configurations, mutual_tls_authentication, tags, backend):
        _moto_domain_name_init(
            self, domain_name, domain_name_configurations, mutual_tls_authentication, tags, backend
        )
        alphabet = string.ascii_lowercase + string.digits
        regional_id = "".join(random.choice(alphabet) for _ in range(10))
        self.region_name = backend.region_name
        self.api_gateway_domain_name = f"d-{regional_id}.execute-api.{backend.region_name}.amazonaws.com"
        self.domain_name_configurations = _domain_name_configurations(self, domain_name_configurations)


# --- API Gateway v2: one type of API per domain name; UpdateApiMapping and
# UpdateDomainName; DeleteDomainName of a domain name with mappings ----------


def _check_api_type(backend, domain_name, api_id, mapping_id=None):
    """Refuses `api_id` on `domain_name` if the domain name's other mappings
    (not `mapping_id`) map APIs of the other type (WebSocket or not)."""
    websocket = backend.get_api(api_id).protocol_type == "WEBSOCKET"
    for mapping in backend.api_mappings.values():
        if mapping.domain_name != domain_name or mapping.api_mapping_id == mapping_id:
            continue
        other = backend.apis.get(mapping.api_id)
        if other is not None and (other.protocol_type == "WEBSOCKET") != websocket:
            raise BadRequestException(
                "Currently, WebSocket APIs can only be attached to a domain name with other WebSocket APIs."
            )


def _check_api_mapping_key(api_mapping_key):
    """moto's own checks of CreateApiMapping, for UpdateApiMapping."""
    if api_mapping_key.startswith("/") or "//" in api_mapping_key:
        raise BadRequestException("API mapping key should not start with a '/' or have consecutive '/'s.")
    if api_mapping_key.endswith("/"):
        raise BadRequestException("API mapping key should not end with a '/'.")


_moto_create_api_mapping = ApiGatewayV2Backend.create_api_mapping
_moto_create_domain_name = ApiGatewayV2Backend.create_domain_name


class _MappingKeyTaken(APIGatewayV2Error):
    code = 409

    def __init__(self, domain_name, api_mapping_key):
        super().__init__(
            "ConflictException",
            f"The API mapping key '{api_mapping_key}' is already used by another mapping of {domain_name}.",
        )


class _BackendDomainNames:
    def create_api_mapping(self, api_id, api_mapping_key, domain_name, stage):
        # An unknown domain name or API: moto's NotFoundException, as on AWS.
        if domain_name in self.domain_names and api_id in self.apis:
            _check_api_type(self, domain_name, api_id)
            # One mapping per path; moto overwrites a mapping of the same
            # key and stage (its id is their hash) and adds one of another.
            if any(m.domain_name == domain_name and m.api_mapping_key == api_mapping_key for m in self.api_mappings.values()):
                raise _MappingKeyTaken(domain_name, api_mapping_key)
        return _moto_create_api_mapping(self, api_id, api_mapping_key, domain_name, stage)

    def update_api_mapping(self, domain_name, api_mapping_id, changes):
        mapping = self.get_api_mapping(api_mapping_id, domain_name)
        if mapping.domain_name != domain_name:
            raise ApiMappingNotFound()
        api_id = changes.get("apiId", mapping.api_id)
        self.get_api(api_id)
        _check_api_type(self, domain_name, api_id, mapping_id=api_mapping_id)
        if changes.get("apiMappingKey") is not None:
            _check_api_mapping_key(changes["apiMappingKey"])
            mapping.api_mapping_key = changes["apiMappingKey"]
        mapping.api_id = api_id
        if changes.get("stage") is not None:
            mapping.stage = changes["stage"]
        return mapping

    def create_domain_name(self, domain_name, domain_name_configurations, mutual_tls_authentication, tags):
        domain = _moto_create_domain_name(
            self, domain_name, domain_name_configurations, mutual_tls_authentication, tags
        )
        for arn in _domain_certificates(domain):
            _certificate_users(self, arn, _domain_user(self, domain_name), True)
        return domain

    def update_domain_name(self, domain_name, changes):
        domain = self.get_domain_name(domain_name)
        if changes.get("domainNameConfigurations") is not None:
            configurations = changes["domainNameConfigurations"]
            for arn in _domain_certificates(domain):
                _certificate_users(self, arn, _domain_user(self, domain_name), False)
            domain.domain_name_configurations = _domain_name_configurations(domain, configurations)
            for arn in _domain_certificates(domain):
                _certificate_users(self, arn, _domain_user(self, domain_name), True)
        if changes.get("mutualTlsAuthentication") is not None:
            domain.mutual_tls_authentication = changes["mutualTlsAuthentication"]
        return domain

    def delete_domain_name(self, domain_name):
        domain = self.get_domain_name(domain_name)
        for arn in _domain_certificates(domain):
            _certificate_users(self, arn, _domain_user(self, domain_name), False)
        for mapping_id in [i for i, m in self.api_mappings.items() if m.domain_name == domain_name]:
            del self.api_mappings[mapping_id]
        del self.domain_names[domain_name]


class _ResponseDomainNames:
    def update_api_mapping(self):
        mapping = self.apigatewayv2_backend.update_api_mapping(
            unquote(self.uri_match["domainName"]), self.uri_match["apiMappingId"], _request_json(self)
        )
        return _reply(200, mapping.to_json())

    def update_domain_name(self):
        domain = self.apigatewayv2_backend.update_domain_name(
            unquote(self.uri_match["domainName"]), _request_json(self)
        )
        return _reply(200, domain.to_json())


# --- ACM: DNS validation and certificates in use ----------------------------

_moto_cert_init = CertBundle.__init__


def _validation_record_names(bundle):
    """The names of the CNAME records DescribeCertificate asks for."""
    described = bundle.describe()["Certificate"]
    return {
        option["ResourceRecord"]["Name"].rstrip(".").lower()
        for option in described.get("DomainValidationOptions", [])
        if "ResourceRecord" in option
    }


def _has_record(account_id, name):
    """Whether a hosted zone of the account has a CNAME record `name`."""
    for backend in route53_backends[account_id].values():
        for zone in backend.zones.values():
            for record in zone.rrsets:
                if record.type == "CNAME" and record.name.rstrip(".").lower() == name:
                    return True
    return False


class _CertificateAsOnAws:
    def __init__(self, account_id, *args, **kwargs):
        _moto_cert_init(self, account_id, *args, **kwargs)
        self.account_id = account_id
        self.validated_at = None

    def check(self):
        if self.type != "AMAZON_ISSUED" or self.status != "PENDING_VALIDATION":
            return
        names = _validation_record_names(self)
        if names and all(_has_record(self.account_id, name) for name in names):
            self.validated_at = self.validated_at or utcnow()
            if (utcnow() - self.validated_at).total_seconds() >= moto_settings.ACM_VALIDATION_WAIT:
                self.status = "ISSUED"


class _AcmInUse:
    def delete_certificate(self, arn):
        bundle = self.get_certificate(arn)
        if bundle.in_use_by:
            raise AWSError(
                f"Certificate {arn} in account {self.account_id} is in use.", exception_type="ResourceInUseException"
            )
        _moto_delete_certificate(self, arn)


_moto_delete_certificate = AWSCertificateManagerBackend.delete_certificate


def _certificate_users(backend, arn, user, using):
    """Marks (or unmarks) `user` as using the ACM certificate `arn`."""
    if not arn:
        return
    for acm in acm_backends[backend.account_id].values():
        bundle = acm._certificates.get(arn)
        if bundle is None:
            continue
        if using and user not in bundle.in_use_by:
            bundle.in_use_by.append(user)
        if not using and user in bundle.in_use_by:
            bundle.in_use_by.remove(user)


def _domain_certificates(domain):
    return [c.get("certificateArn") for c in domain.domain_name_configurations]


def _domain_user(backend, name):
    return f"arn:aws:apigateway:{backend.region_name}::/domainnames/{name}"


# Minutes on AWS; a second here unless MOTO_ACM_VALIDATION_WAIT says.
if "MOTO_ACM_VALIDATION_WAIT" not in os.environ:
    moto_settings.ACM_VALIDATION_WAIT = 1

_graft(_CertificateAsOnAws, CertBundle)
_graft(_AcmInUse, AWSCertificateManagerBackend)

_graft(_DomainNameAsOnAws, DomainName)
_graft(_BackendDomainNames, ApiGatewayV2Backend)
_graft(_ResponseDomainNames, ApiGatewayV2Response)


# --- CloudWatch: percentile statistics in GetMetricData ---------------------

_moto_statistic = Statistics.get_statistics_for_type
_moto_get_metric_data = CloudWatchBackend.get_metric_data
_PERCENTILE = re.compile(r"p(100|\d{1,2}(?:\.\d+)?)")


class _StatisticsWithPercentiles:
    def get_statistics_for_type(self, stat):
        match = _PERCENTILE.fullmatch(stat)
        if match is None:
            return _moto_statistic(self, stat)
        values = sorted(self.metric_single_values_list)
        if not values:
            return None
        rank = max(1, math.ceil(float(match[1]) / 100 * len(values)))
        return values[rank - 1]


class _BackendMetricDataWithoutGaps:
    def get_metric_data(self, *args, **kwargs):
        results = _moto_get_metric_data(self, *args, **kwargs)
        for result in results:
            kept = [(t, v) for t, v in zip(result["timestamps"], result["values"]) if v is not None]
            result["timestamps"] = [t for t, _ in kept]
            result["values"] = [v for _, v in kept]
        return results


_graft(_StatisticsWithPercentiles, Statistics)
_graft(_BackendMetricDataWithoutGaps, CloudWatchBackend)


# --- CloudWatch: Smithy RPC v2 CBOR, answered by moto's JSON protocol --------

_RPC_V2_PATH = re.compile(r"^/service/(?P<service>[^/]+)/operation/(?P<operation>[^/]+)$")
# Smithy service name in the path -> botocore service name.
_RPC_V2_SERVICES = {"GraniteServiceVersion20100801": "cloudwatch"}
_moto_dispatch = DomainDispatcherApplication.__call__


@functools.lru_cache(maxsize=None)
def _service_model(smithy_service):
    name = _RPC_V2_SERVICES.get(smithy_service)
    return name and botocore.session.get_session().get_service_model(name)


def _as_json(value):
    """A CBOR value JSON can carry: timestamps (tag 1) as epoch seconds."""
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


def _typed(value, shape):
    """A JSON answer's value as the model types it in CBOR."""
    if shape is None or value is None:
        return value
    kind = shape.type_name
    if kind == "timestamp":
        return cbor2.CBORTag(1, float(value))
    if kind in ("double", "float"):
        return float(value)
    if kind in ("integer", "long"):
        return int(value)
    if kind == "structure" and isinstance(value, dict):
        return {k: _typed(v, shape.members.get(k)) for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [_typed(v, shape.member) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: _typed(v, shape.value) for k, v in value.items()}
    return value


class _DispatcherWithRpcV2Cbor:
    def __call__(self, environ, start_response):
        match = _RPC_V2_PATH.match(environ.get("PATH_INFO", ""))
        model = match and _service_model(match["service"])
        if model is None or environ.get("HTTP_SMITHY_PROTOCOL") != "rpc-v2-cbor":
            return _moto_dispatch(self, environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        if environ.pop("HTTP_CONTENT_ENCODING", "") == "gzip":
            body = gzip.decompress(body)
        request = json.dumps(cbor2.loads(body) if body else {}, default=_as_json).encode()
        environ.update(
            PATH_INFO="/",
            CONTENT_TYPE="application/x-amz-json-1.0",
            CONTENT_LENGTH=str(len(request)),
            HTTP_X_AMZ_TARGET=f"{match['service']}.{match['operation']}",
        )
        environ["wsgi.input"] = io.BytesIO(request)
        answered = {}

        def capture(status, headers, exc_info=None):
            answered.update(status=status, headers=headers)
            return lambda _data: None

        text = b"".join(_moto_dispatch(self, environ, capture))
        answer = json.loads(text) if text.strip() else {}
        if answered["status"].startswith("2"):
            answer = _typed(answer, model.operation_model(match["operation"]).output_shape)
        encoded = cbor2.dumps(answer)
        headers = [(k, v) for k, v in answered["headers"] if k.lower() not in ("content-type", "content-length")]
        headers += [
            ("Content-Type", "application/cbor"),
            ("Content-Length", str(len(encoded))),
            ("smithy-protocol", "rpc-v2-cbor"),
        ]
        start_response(answered["status"], headers)
        return [encoded]


_graft(_DispatcherWithRpcV2Cbor, DomainDispatcherApplication)


def _exit_with_parent():
    """The process that started the server owns it (chatctl dev, a test),
    but may run it in its own process group, out of reach of the terminal's
    Ctrl-C: end the server when that process is gone, however it ended."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


if __name__ == "__main__":
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    main(sys.argv[1:])
