from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class User(_message.Message):
    __slots__ = ("id", "name", "email", "served_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    email: str
    served_by: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., email: _Optional[str] = ..., served_by: _Optional[str] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Product(_message.Message):
    __slots__ = ("id", "title", "price_cents", "served_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    price_cents: int
    served_by: str
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., price_cents: _Optional[int] = ..., served_by: _Optional[str] = ...) -> None: ...

class GetProductRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListProductsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("product_id", "quantity")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    quantity: int
    def __init__(self, product_id: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("id", "reserved", "served_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    reserved: bool
    served_by: str
    def __init__(self, id: _Optional[str] = ..., reserved: _Optional[bool] = ..., served_by: _Optional[str] = ...) -> None: ...

class ChargeRequest(_message.Message):
    __slots__ = ("order_id", "user_id", "amount_cents")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    user_id: str
    amount_cents: int
    def __init__(self, order_id: _Optional[str] = ..., user_id: _Optional[str] = ..., amount_cents: _Optional[int] = ...) -> None: ...

class Payment(_message.Message):
    __slots__ = ("id", "approved", "served_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    approved: bool
    served_by: str
    def __init__(self, id: _Optional[str] = ..., approved: _Optional[bool] = ..., served_by: _Optional[str] = ...) -> None: ...

class PlaceOrderRequest(_message.Message):
    __slots__ = ("user_id", "product_id", "quantity")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    product_id: str
    quantity: int
    def __init__(self, user_id: _Optional[str] = ..., product_id: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class Order(_message.Message):
    __slots__ = ("id", "reservation_id", "payment_id", "served_by", "inventory_ms", "payments_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_MS_FIELD_NUMBER: _ClassVar[int]
    PAYMENTS_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    reservation_id: str
    payment_id: str
    served_by: str
    inventory_ms: float
    payments_ms: float
    def __init__(self, id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., served_by: _Optional[str] = ..., inventory_ms: _Optional[float] = ..., payments_ms: _Optional[float] = ...) -> None: ...
