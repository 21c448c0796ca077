import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
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

class LoadBalancer(_message.Message):
    __slots__ = ("algorithm",)
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    algorithm: LoadBalancerAlgorithm
    def __init__(self, algorithm: _Optional[_Union[LoadBalancerAlgorithm, str]] = ...) -> None: ...

class TrafficPolicy(_message.Message):
    __slots__ = ("metadata", "spec")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    metadata: ObjectMeta
    spec: TrafficPolicySpec
    def __init__(self, metadata: _Optional[_Union[ObjectMeta, _Mapping]] = ..., spec: _Optional[_Union[TrafficPolicySpec, _Mapping]] = ...) -> None: ...

class TrafficPolicySpec(_message.Message):
    __slots__ = ("service", "load_balancer", "timeout")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    LOAD_BALANCER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    service: str
    load_balancer: LoadBalancer
    timeout: _duration_pb2.Duration
    def __init__(self, service: _Optional[str] = ..., load_balancer: _Optional[_Union[LoadBalancer, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("metadata", "spec")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    metadata: ObjectMeta
    spec: EndpointSpec
    def __init__(self, metadata: _Optional[_Union[ObjectMeta, _Mapping]] = ..., spec: _Optional[_Union[EndpointSpec, _Mapping]] = ...) -> None: ...

class EndpointSpec(_message.Message):
    __slots__ = ("service", "address", "weight", "health")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    service: str
    address: str
    weight: int
    health: HealthState
    def __init__(self, service: _Optional[str] = ..., address: _Optional[str] = ..., weight: _Optional[int] = ..., health: _Optional[_Union[HealthState, str]] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("service", "traffic_policy", "endpoint")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_POLICY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    service: Service
    traffic_policy: TrafficPolicy
    endpoint: Endpoint
    def __init__(self, service: _Optional[_Union[Service, _Mapping]] = ..., traffic_policy: _Optional[_Union[TrafficPolicy, _Mapping]] = ..., endpoint: _Optional[_Union[Endpoint, _Mapping]] = ...) -> None: ...
