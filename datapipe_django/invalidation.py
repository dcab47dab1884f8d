"""Kept for one release: invalidation lives in :mod:`datapipe_django.cache.generations`, the
guard around cache calls in :mod:`datapipe_django.cache.guard`."""

from datapipe_django.cache.generations import (
    LOADED_TENANTS,
    generation_keys,
    invalidate,
    model_generation_key,
    new_token,
    pending_write,
    remember_tenants,
    tenant_attname,
    tenant_attnames,
    watch,
    write_pending,
)
from datapipe_django.cache.guard import CacheGuard, get_guard, is_cache_error

__all__ = [
    "LOADED_TENANTS",
    "CacheGuard",
    "generation_keys",
    "get_guard",
    "invalidate",
    "is_cache_error",
    "model_generation_key",
    "new_token",
    "pending_write",
    "remember_tenants",
    "tenant_attname",
    "tenant_attnames",
    "watch",
    "write_pending",
]
