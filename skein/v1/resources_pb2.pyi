import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Protocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_UNSPECIFIED: _ClassVar[Protocol]
    GRPC: _ClassVar[Protocol]
    HTTP: _ClassVar[Protocol]

class LoadBalancerAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOAD_BALANCER_ALGORITHM_UNSPECIFIED: _ClassVar[LoadBalancerAlgorithm]
    ROUND_ROBIN: _ClassVar[LoadBalancerAlgorithm]
    LEAST_REQUEST: _ClassVar[LoadBalancerAlgorithm]
    WEIGHTED_ROUND_ROBIN: _ClassVar[LoadBalancerAlgorithm]
    RING_HASH: _ClassVar[LoadBalancerAlgorithm]
    MAGLEV: _ClassVar[LoadBalancerAlgorithm]
    PEAK_EWMA: _ClassVar[LoadBalancerAlgorithm]

class RateLimitAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RATE_LIMIT_ALGORITHM_UNSPECIFIED: _ClassVar[RateLimitAlgorithm]
    TOKEN_BUCKET: _ClassVar[RateLimitAlgorithm]
    LEAKY_BUCKET: _ClassVar[RateLimitAlgorithm]
    FIXED_WINDOW: _ClassVar[RateLimitAlgorithm]
    SLIDING_WINDOW: _ClassVar[RateLimitAlgorithm]

class RateLimitScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RATE_LIMIT_SCOPE_UNSPECIFIED: _ClassVar[RateLimitScope]
    SERVICE: _ClassVar[RateLimitScope]
    METHOD: _ClassVar[RateLimitScope]
    CLIENT_IP: _ClassVar[RateLimitScope]
    CLIENT_IDENTITY: _ClassVar[RateLimitScope]
    HEADER: _ClassVar[RateLimitScope]

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    INBOUND: _ClassVar[Direction]
    OUTBOUND: _ClassVar[Direction]

class MtlsMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MTLS_MODE_UNSPECIFIED: _ClassVar[MtlsMode]
    PERMISSIVE: _ClassVar[MtlsMode]
    STRICT: _ClassVar[MtlsMode]

class AuthorizationAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUTHORIZATION_ACTION_UNSPECIFIED: _ClassVar[AuthorizationAction]
    ALLOW: _ClassVar[AuthorizationAction]
    DENY: _ClassVar[AuthorizationAction]

class HealthState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATE_UNSPECIFIED: _ClassVar[HealthState]
    HEALTHY: _ClassVar[HealthState]
    UNHEALTHY: _ClassVar[HealthState]
PROTOCOL_UNSPECIFIED: Protocol
GRPC: Protocol
HTTP: Protocol
LOAD_BALANCER_ALGORITHM_UNSPECIFIED: LoadBalancerAlgorithm
ROUND_ROBIN: LoadBalancerAlgorithm
LEAST_REQUEST: LoadBalancerAlgorithm
WEIGHTED_ROUND_ROBIN: LoadBalancerAlgorithm
RING_HASH: LoadBalancerAlgorithm
MAGLEV: LoadBalancerAlgorithm
PEAK_EWMA: LoadBalancerAlgorithm
RATE_LIMIT_ALGORITHM_UNSPECIFIED: RateLimitAlgorithm
TOKEN_BUCKET: RateLimitAlgorithm
LEAKY_BUCKET: RateLimitAlgorithm
FIXED_WINDOW: RateLimitAlgorithm
SLIDING_WINDOW: RateLimitAlgorithm
RATE_LIMIT_SCOPE_UNSPECIFIED: RateLimitScope
SERVICE: RateLimitScope
METHOD: RateLimitScope
CLIENT_IP: RateLimitScope
CLIENT_IDENTITY: RateLimitScope
HEADER: RateLimitScope
DIRECTION_UNSPECIFIED: Direction
INBOUND: Direction
OUTBOUND: Direction
MTLS_MODE_UNSPECIFIED: MtlsMode
PERMISSIVE: MtlsMode
STRICT: MtlsMode
AUTHORIZATION_ACTION_UNSPECIFIED: AuthorizationAction
ALLOW: AuthorizationAction
DENY: AuthorizationAction
HEALTH_STATE_UNSPECIFIED: HealthState
HEALTHY: HealthState
UNHEALTHY: HealthState

class ObjectMeta(_message.Message):
    __slots__ = ("name", "labels", "version")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    version: int
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., version: _Optional[int] = ...) -> None: ...

class Service(_message.Message):
    __slots__ = ("metadata", "spec")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    metadata: ObjectMeta
    spec: ServiceSpec
    def __init__(self, metadata: _Optional[_Union[ObjectMeta, _Mapping]] = ..., spec: _Optional[_Union[ServiceSpec, _Mapping]] = ...) -> None: ...

class ServiceSpec(_message.Message):
    __slots__ = ("protocol", "port", "http_path")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    HTTP_PATH_FIELD_NUMBER: _ClassVar[int]
    protocol: Protocol
    port: int
    http_path: str
    def __init__(self, protocol: _Optional[_Union[Protocol, str]] = ..., port: _Optional[int] = ..., http_path: _Optional[str] = ...) -> None: ...

class HashPolicy(_message.Message):
    __slots__ = ("header", "source_ip")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IP_FIELD_NUMBER: _ClassVar[int]
    header: str
    source_ip: bool
    def __init__(self, header: _Optional[str] = ..., source_ip: _Optional[bool] = ...) -> None: ...

class LoadBalancer(_message.Message):
    __slots__ = ("algorithm", "hash", "weights", "decay", "ring_size")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    DECAY_FIELD_NUMBER: _ClassVar[int]
    RING_SIZE_FIELD_NUMBER: _ClassVar[int]
    algorithm: LoadBalancerAlgorithm
    hash: HashPolicy
    weights: _containers.ScalarMap[str, int]
    decay: _duration_pb2.Duration
    ring_size: int
    def __init__(self, algorithm: _Optional[_Union[LoadBalancerAlgorithm, str]] = ..., hash: _Optional[_Union[HashPolicy, _Mapping]] = ..., weights: _Optional[_Mapping[str, int]] = ..., decay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., ring_size: _Optional[int] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "retry_on", "per_try_timeout", "base_interval", "max_interval", "max_buffer_bytes")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RETRY_ON_FIELD_NUMBER: _ClassVar[int]
    PER_TRY_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    BASE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MAX_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MAX_BUFFER_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    retry_on: _containers.RepeatedScalarFieldContainer[str]
    per_try_timeout: _duration_pb2.Duration
    base_interval: _duration_pb2.Duration
    max_interval: _duration_pb2.Duration
    max_buffer_bytes: int
    def __init__(self, max_attempts: _Optional[int] = ..., retry_on: _Optional[_Iterable[str]] = ..., per_try_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., base_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_buffer_bytes: _Optional[int] = ...) -> None: ...

class RetryBudget(_message.Message):
    __slots__ = ("ratio", "min_retries_per_second", "ttl", "disabled")
    RATIO_FIELD_NUMBER: _ClassVar[int]
    MIN_RETRIES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    ratio: float
    min_retries_per_second: int
    ttl: _duration_pb2.Duration
    disabled: bool
    def __init__(self, ratio: _Optional[float] = ..., min_retries_per_second: _Optional[int] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., disabled: _Optional[bool] = ...) -> None: ...

class CircuitBreaker(_message.Message):
    __slots__ = ("failure_rate_threshold", "window", "minimum_requests", "open_duration", "half_open_max_calls", "success_threshold", "disabled", "max_connections", "max_pending_requests", "max_requests", "max_retries")
    FAILURE_RATE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    OPEN_DURATION_FIELD_NUMBER: _ClassVar[int]
    HALF_OPEN_MAX_CALLS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    MAX_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_PENDING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    failure_rate_threshold: float
    window: _duration_pb2.Duration
    minimum_requests: int
    open_duration: _duration_pb2.Duration
    half_open_max_calls: int
    success_threshold: int
    disabled: bool
    max_connections: int
    max_pending_requests: int
    max_requests: int
    max_retries: int
    def __init__(self, failure_rate_threshold: _Optional[float] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., minimum_requests: _Optional[int] = ..., open_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., half_open_max_calls: _Optional[int] = ..., success_threshold: _Optional[int] = ..., disabled: _Optional[bool] = ..., max_connections: _Optional[int] = ..., max_pending_requests: _Optional[int] = ..., max_requests: _Optional[int] = ..., max_retries: _Optional[int] = ...) -> None: ...

class OutlierDetection(_message.Message):
    __slots__ = ("consecutive_failures", "interval", "base_ejection_time", "max_ejection_time", "max_ejection_percent", "success_rate_minimum_hosts", "success_rate_request_volume", "success_rate_stdev_factor", "disabled")
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    BASE_EJECTION_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_EJECTION_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_EJECTION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_MINIMUM_HOSTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_REQUEST_VOLUME_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_STDEV_FACTOR_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    consecutive_failures: int
    interval: _duration_pb2.Duration
    base_ejection_time: _duration_pb2.Duration
    max_ejection_time: _duration_pb2.Duration
    max_ejection_percent: int
    success_rate_minimum_hosts: int
    success_rate_request_volume: int
    success_rate_stdev_factor: float
    disabled: bool
    def __init__(self, consecutive_failures: _Optional[int] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., base_ejection_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_ejection_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_ejection_percent: _Optional[int] = ..., success_rate_minimum_hosts: _Optional[int] = ..., success_rate_request_volume: _Optional[int] = ..., success_rate_stdev_factor: _Optional[float] = ..., disabled: _Optional[bool] = ...) -> None: ...

class HealthCheck(_message.Message):
    __slots__ = ("interval", "timeout", "healthy_threshold", "unhealthy_threshold", "http_path", "grpc_service")
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    UNHEALTHY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    HTTP_PATH_FIELD_NUMBER: _ClassVar[int]
    GRPC_SERVICE_FIELD_NUMBER: _ClassVar[int]
    interval: _duration_pb2.Duration
    timeout: _duration_pb2.Duration
    healthy_threshold: int
    unhealthy_threshold: int
    http_path: str
    grpc_service: str
    def __init__(self, interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., healthy_threshold: _Optional[int] = ..., unhealthy_threshold: _Optional[int] = ..., http_path: _Optional[str] = ..., grpc_service: _Optional[str] = ...) -> None: ...

class RateLimit(_message.Message):
    __slots__ = ("name", "algorithm", "scope", "requests", "period", "burst", "prefix", "header", "direction", "max_keys")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MAX_KEYS_FIELD_NUMBER: _ClassVar[int]
    name: str
    algorithm: RateLimitAlgorithm
    scope: RateLimitScope
    requests: int
    period: _duration_pb2.Duration
    burst: int
    prefix: str
    header: str
    direction: Direction
    max_keys: int
    def __init__(self, name: _Optional[str] = ..., algorithm: _Optional[_Union[RateLimitAlgorithm, str]] = ..., scope: _Optional[_Union[RateLimitScope, str]] = ..., requests: _Optional[int] = ..., period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., burst: _Optional[int] = ..., prefix: _Optional[str] = ..., header: _Optional[str] = ..., direction: _Optional[_Union[Direction, str]] = ..., max_keys: _Optional[int] = ...) -> None: ...

class MethodPolicy(_message.Message):
    __slots__ = ("prefix", "timeout", "retry")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    timeout: _duration_pb2.Duration
    retry: RetryPolicy
    def __init__(self, prefix: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ...) -> None: ...

class TrafficPolicy(_message.Message):
    __slots__ = ("metadata", "spec")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    metadata: ObjectMeta
    spec: TrafficPolicySpec
    def __init__(self, metadata: _Optional[_Union[ObjectMeta, _Mapping]] = ..., spec: _Optional[_Union[TrafficPolicySpec, _Mapping]] = ...) -> None: ...

class TrafficPolicySpec(_message.Message):
    __slots__ = ("service", "load_balancer", "timeout", "retry", "retry_budget", "circuit_breaker", "outlier_detection", "health_check", "rate_limits", "methods", "mtls", "jwt", "api_keys")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    LOAD_BALANCER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    RETRY_BUDGET_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_BREAKER_FIELD_NUMBER: _ClassVar[int]
    OUTLIER_DETECTION_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    MTLS_FIELD_NUMBER: _ClassVar[int]
    JWT_FIELD_NUMBER: _ClassVar[int]
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    service: str
    load_balancer: LoadBalancer
    timeout: _duration_pb2.Duration
    retry: RetryPolicy
    retry_budget: RetryBudget
    circuit_breaker: CircuitBreaker
    outlier_detection: OutlierDetection
    health_check: HealthCheck
    rate_limits: _containers.RepeatedCompositeFieldContainer[RateLimit]
    methods: _containers.RepeatedCompositeFieldContainer[MethodPolicy]
    mtls: MtlsMode
    jwt: _containers.RepeatedCompositeFieldContainer[JwtRule]
    api_keys: ApiKeyAuth
    def __init__(self, service: _Optional[str] = ..., load_balancer: _Optional[_Union[LoadBalancer, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., retry_budget: _Optional[_Union[RetryBudget, _Mapping]] = ..., circuit_breaker: _Optional[_Union[CircuitBreaker, _Mapping]] = ..., outlier_detection: _Optional[_Union[OutlierDetection, _Mapping]] = ..., health_check: _Optional[_Union[HealthCheck, _Mapping]] = ..., rate_limits: _Optional[_Iterable[_Union[RateLimit, _Mapping]]] = ..., methods: _Optional[_Iterable[_Union[MethodPolicy, _Mapping]]] = ..., mtls: _Optional[_Union[MtlsMode, str]] = ..., jwt: _Optional[_Iterable[_Union[JwtRule, _Mapping]]] = ..., api_keys: _Optional[_Union[ApiKeyAuth, _Mapping]] = ...) -> None: ...

class JwtRule(_message.Message):
    __slots__ = ("issuer", "audiences", "jwks_file", "jwks_uri", "jwks_refresh", "clock_skew", "header", "forward_claims", "required")
    class ForwardClaimsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    AUDIENCES_FIELD_NUMBER: _ClassVar[int]
    JWKS_FILE_FIELD_NUMBER: _ClassVar[int]
    JWKS_URI_FIELD_NUMBER: _ClassVar[int]
    JWKS_REFRESH_FIELD_NUMBER: _ClassVar[int]
    CLOCK_SKEW_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FORWARD_CLAIMS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    audiences: _containers.RepeatedScalarFieldContainer[str]
    jwks_file: str
    jwks_uri: str
    jwks_refresh: _duration_pb2.Duration
    clock_skew: _duration_pb2.Duration
    header: str
    forward_claims: _containers.ScalarMap[str, str]
    required: bool
    def __init__(self, issuer: _Optional[str] = ..., audiences: _Optional[_Iterable[str]] = ..., jwks_file: _Optional[str] = ..., jwks_uri: _Optional[str] = ..., jwks_refresh: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., clock_skew: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., header: _Optional[str] = ..., forward_claims: _Optional[_Mapping[str, str]] = ..., required: _Optional[bool] = ...) -> None: ...

class ApiKeyAuth(_message.Message):
    __slots__ = ("header", "required")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    header: str
    required: bool
    def __init__(self, header: _Optional[str] = ..., required: _Optional[bool] = ...) -> None: ...

class AuthorizationPolicy(_message.Message):
    __slots__ = ("metadata", "spec")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    metadata: ObjectMeta
    spec: AuthorizationPolicySpec
    def __init__(self, metadata: _Optional[_Union[ObjectMeta, _Mapping]] = ..., spec: _Optional[_Union[AuthorizationPolicySpec, _Mapping]] = ...) -> None: ...

class AuthorizationPolicySpec(_message.Message):
    __slots__ = ("service", "action", "rules")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    service: str
    action: AuthorizationAction
    rules: _containers.RepeatedCompositeFieldContainer[AuthorizationRule]
    def __init__(self, service: _Optional[str] = ..., action: _Optional[_Union[AuthorizationAction, str]] = ..., rules: _Optional[_Iterable[_Union[AuthorizationRule, _Mapping]]] = ...) -> None: ...

class AuthorizationRule(_message.Message):
    __slots__ = ("sources", "paths", "http_methods", "headers", "claims", "api_keys")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ClaimsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    HTTP_METHODS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedScalarFieldContainer[str]
    paths: _containers.RepeatedScalarFieldContainer[str]
    http_methods: _containers.RepeatedScalarFieldContainer[str]
    headers: _containers.ScalarMap[str, str]
    claims: _containers.ScalarMap[str, str]
    api_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sources: _Optional[_Iterable[str]] = ..., paths: _Optional[_Iterable[str]] = ..., http_methods: _Optional[_Iterable[str]] = ..., headers: _Optional[_Mapping[str, str]] = ..., claims: _Optional[_Mapping[str, str]] = ..., api_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("metadata", "spec")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    metadata: ObjectMeta
    spec: ApiKeySpec
    def __init__(self, metadata: _Optional[_Union[ObjectMeta, _Mapping]] = ..., spec: _Optional[_Union[ApiKeySpec, _Mapping]] = ...) -> None: ...

class ApiKeySpec(_message.Message):
    __slots__ = ("service", "sha256", "created_at", "revoked")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    service: str
    sha256: str
    created_at: float
    revoked: bool
    def __init__(self, service: _Optional[str] = ..., sha256: _Optional[str] = ..., created_at: _Optional[float] = ..., revoked: _Optional[bool] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("metadata", "spec")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    metadata: ObjectMeta
    spec: EndpointSpec
    def __init__(self, metadata: _Optional[_Union[ObjectMeta, _Mapping]] = ..., spec: _Optional[_Union[EndpointSpec, _Mapping]] = ...) -> None: ...

class EndpointSpec(_message.Message):
    __slots__ = ("service", "address", "weight", "health", "health_reason")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_REASON_FIELD_NUMBER: _ClassVar[int]
    service: str
    address: str
    weight: int
    health: HealthState
    health_reason: str
    def __init__(self, service: _Optional[str] = ..., address: _Optional[str] = ..., weight: _Optional[int] = ..., health: _Optional[_Union[HealthState, str]] = ..., health_reason: _Optional[str] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("service", "traffic_policy", "endpoint", "authorization_policy")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_POLICY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_POLICY_FIELD_NUMBER: _ClassVar[int]
    service: Service
    traffic_policy: TrafficPolicy
    endpoint: Endpoint
    authorization_policy: AuthorizationPolicy
    def __init__(self, service: _Optional[_Union[Service, _Mapping]] = ..., traffic_policy: _Optional[_Union[TrafficPolicy, _Mapping]] = ..., endpoint: _Optional[_Union[Endpoint, _Mapping]] = ..., authorization_policy: _Optional[_Union[AuthorizationPolicy, _Mapping]] = ...) -> None: ...
