"""Tenant use cases: tenants, owners, API keys, limits, and the audit rows they leave behind.

Adapters (API, admin, management commands) parse their input and call these; nothing else
writes tenants' keys or limits.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import string
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_email, validate_slug
from django.db import models, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from config.queries import fetch_models
from tenants.models import ApiKey, AuditLog, Membership, Role, Tenant, hash_key

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

logger = logging.getLogger(__name__)

KEY_SCHEME = "ry"
# The prefix is split off at "_", so its alphabet must not contain one (token_urlsafe's does).
_PREFIX_ALPHABET = string.ascii_letters + string.digits
_SECRET_BYTES = 32
# Real keys are ~60 characters; anything much longer is not worth hashing.
_MAX_RAW_KEY_LEN = 256
# last_used_at is for humans ("used 3 minutes ago"); a minute's resolution keeps the
# authentication hot path from writing on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)

LIMIT_FIELDS: tuple[str, ...] = (
    "max_concurrent_runs",
    "max_queued_runs",
    "runs_per_minute",
    "max_steps",
    "max_tokens",
    "max_cost_usd",
    "max_wall_seconds",
    "max_state_bytes",
    "max_child_runs",
    "max_resurrections",
    "daily_token_budget",
    "monthly_token_budget",
    "daily_cost_budget_usd",
    "monthly_cost_budget_usd",
    "warn_ratio",
    "http_allowed_hosts",
    "http_allow_private",
)

_NONE_WORDS = {"", "none", "null", "unlimited"}
_TRUE_WORDS = {"1", "true", "yes", "on"}
_FALSE_WORDS = {"0", "false", "no", "off"}
_HOST_RE = re.compile(
    r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d{1,5})?$"
)


# --- Actors and the audit log ----------------------------------------------------------------


@runtime_checkable
class _ContextLike(Protocol):
    """A TenantContext (tenants.auth) without importing it: auth imports this module."""

    user: Any
    api_key: ApiKey | None

    @property
    def actor_label(self) -> str: ...


# Who did it: a user, a TenantContext, a label such as "cli", or None for the system.
Actor: TypeAlias = "AbstractBaseUser | AnonymousUser | _ContextLike | str | None"


def _actor_fields(by: Actor) -> tuple[Any, str]:
    """(user row or None, label) for an actor: a user, a tenant context, a label, or nobody."""
    if by is None:
        return None, "system"
    if isinstance(by, str):
        return None, by[:200]
    if isinstance(by, _ContextLike):
        user = by.user if getattr(by.user, "is_authenticated", False) else None
        return user, by.actor_label[:200]
    if getattr(by, "is_authenticated", False):
        return by, by.get_username()[:200]
    return None, "anonymous"


def record_audit(
    action: str,
    *,
    by: Actor = None,
    tenant: Tenant | None = None,
    target: models.Model | None = None,
    reason: str = "",
    status_before: str = "",
    status_after: str = "",
    data: dict[str, Any] | None = None,
) -> AuditLog:
    """Write one audit row. `by` is a user, a TenantContext, a label such as "cli", or None."""
    actor, label = _actor_fields(by)
    target_type = target_id = ""
    if target is not None:
        target_type = target._meta.label_lower
        target_id = str(getattr(target, "public_id", None) or target.pk)
    return AuditLog.objects.create(
        actor=actor,
        actor_label=label,
        tenant=tenant,
        action=action,
        target_type=target_type,
        target_id=target_id,
        reason=reason,
        status_before=status_before,
        status_after=status_after,
        data=data or {},
    )


# --- Limits: parsing and shaping ---------------------------------------------------------------

_INT_MAX: dict[type[models.Field], int] = {
    models.PositiveIntegerField: 2_147_483_647,
    models.PositiveBigIntegerField: 9_223_372_036_854_775_807,
}


def _parse_int(name: str, value: Any, field: models.Field) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        number = int(value)
    elif isinstance(value, Decimal | float):
        try:
            number = int(value) if value == int(value) else None
        except (ValueError, ArithmeticError):  # NaN, infinities
            number = None
    if number is None:
        raise ValueError(f"{name} must be a whole number or 'none', got {value!r}")
    top = _INT_MAX.get(type(field), 2_147_483_647)
    if not 0 <= number <= top:
        raise ValueError(f"{name} must be between 0 and {top}, got {number}")
    return number


def _parse_decimal(name: str, value: Any, field: models.DecimalField) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, not {value!r}")
    try:
        number = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ValueError(f"{name} must be a number or 'none', got {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    places = field.decimal_places or 0
    exponent = number.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise ValueError(f"{name} allows at most {places} decimal places, got {value!r}")
    top = Decimal(10) ** ((field.max_digits or 0) - places)
    if number < 0 or number >= top:
        raise ValueError(f"{name} must be at least 0 and less than {top}, got {value!r}")
    return number.quantize(Decimal(1).scaleb(-places))


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _parse_hosts(name: str, value: Any) -> list[str]:
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        return []
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"{name} must be a comma-separated list of host names, got {value!r}")
    hosts: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{name}: {item!r} is not a host name")
        host = item.strip().lower().rstrip(".")
        if not host:
            continue
        if not _HOST_RE.match(host):
            raise ValueError(
                f"{name}: {item.strip()!r} is not a host name (write 'api.example.com' or "
                "'*.example.com', optionally with ':port'; no scheme or path)"
            )
        if host not in hosts:
            hosts.append(host)
    return hosts


def parse_limit(name: str, value: Any) -> Any:
    """The stored value for one limit, from a form, CLI or API value; ValueError says why not.

    Strings "none", "null", "unlimited" and "" clear a nullable limit (None = unlimited).
    """
    if name not in LIMIT_FIELDS:
        raise ValueError(f"unknown limit {name!r}; known limits: {', '.join(LIMIT_FIELDS)}")
    field = Tenant._meta.get_field(name)
    assert isinstance(field, models.Field)
    if name == "http_allowed_hosts":
        return _parse_hosts(name, value)
    if name == "http_allow_private":
        return _parse_bool(name, value)
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        if not field.null:
            raise ValueError(f"{name} cannot be unlimited (none); give a number")
        return None
    if name == "warn_ratio":
        assert isinstance(field, models.DecimalField)
        ratio = _parse_decimal(name, value, field)
        if not Decimal(0) < ratio <= Decimal(1):
            raise ValueError(f"warn_ratio must be above 0 and at most 1, got {value!r}")
        return ratio
    if isinstance(field, models.DecimalField):
        return _parse_decimal(name, value, field)
    return _parse_int(name, value, field)


def parse_limits(values: dict[str, Any]) -> dict[str, Any]:
    """parse_limit over a mapping; the first bad name or value raises ValueError."""
    return {name: parse_limit(name, value) for name, value in values.items()}


def _json_value(value: Any) -> Any:
    # Every limit Decimal has at most 12 significant digits, so a float round-trips exactly.
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return list(value)
    return value


def tenant_limits_dict(tenant: Tenant) -> dict[str, Any]:
    """The tenant's limits, JSON-safe: Decimals as floats, None for unlimited, in a fixed order."""
    return {name: _json_value(getattr(tenant, name)) for name in LIMIT_FIELDS}


# --- Tenants ----------------------------------------------------------------------------------


@transaction.atomic
def create_tenant(
    slug: str,
    *,
    name: str,
    owner_email: str | None = None,
    owner_password: str | None = None,
    by: Actor = None,
    **limits: Any,
) -> Tenant:
    """Create a tenant with its limits and, given an e-mail, its owner.

    The owner is the user whose username is that e-mail, created with an unusable password
    (or `owner_password`) if there is none; an existing user keeps their password.
    """
    try:
        validate_slug(slug)
    except ValidationError:
        raise ValueError(f"slug {slug!r} must be letters, digits, hyphens or underscores") from None
    if len(slug) > Tenant._meta.get_field("slug").max_length:  # type: ignore[operator]
        raise ValueError(f"slug {slug!r} is longer than 64 characters")
    name = (name or "").strip()
    if not name:
        raise ValueError("name is required")
    cleaned = parse_limits(limits)
    if Tenant.objects.filter(slug=slug).exists():
        raise ValueError(f"a tenant with slug {slug!r} already exists")
    tenant = Tenant.objects.create(slug=slug, name=name, **cleaned)

    owner_label = None
    if owner_email:
        owner = _get_or_create_user(owner_email, password=owner_password)
        Membership.objects.create(tenant=tenant, user=owner, role=Role.OWNER)
        owner_label = owner.get_username()
    record_audit(
        "tenant.created",
        by=by,
        tenant=tenant,
        target=tenant,
        data={"owner": owner_label, "limits": tenant_limits_dict(tenant)},
    )
    return tenant


def _get_or_create_user(email: str, *, password: str | None) -> Any:
    email = email.strip()
    try:
        validate_email(email)
    except ValidationError:
        raise ValueError(f"{email!r} is not an e-mail address") from None
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=email, defaults={"email": email})
    if created:
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


@transaction.atomic
def set_tenant_limits(tenant: Tenant, values: dict[str, Any], *, by: Actor = None) -> Tenant:
    """Change some of a tenant's limits and record what changed in the audit log.

    Every name and value is checked before anything is written. Only the limit columns are
    saved, under a row lock, so admission counters updated concurrently are never overwritten.
    No audit row is written when nothing changed.
    """
    cleaned = parse_limits(values)
    locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
    changed: dict[str, list[Any]] = {}
    for name, new in cleaned.items():
        old = getattr(locked, name)
        if old != new:
            changed[name] = [_json_value(old), _json_value(new)]
            setattr(locked, name, new)
    if changed:
        locked.save(update_fields=list(changed))
        record_audit(
            "tenant.limits", by=by, tenant=locked, target=locked, data={"changed": changed}
        )
    for name in LIMIT_FIELDS:
        setattr(tenant, name, getattr(locked, name))
    return locked


# --- API keys ---------------------------------------------------------------------------------


def _new_raw_key() -> tuple[str, str]:
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(ApiKey.PREFIX_LEN))
    return prefix, f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(_SECRET_BYTES)}"


def split_raw_key(raw: str) -> str | None:
    """The prefix of a well-formed raw key, or None."""
    if not isinstance(raw, str) or len(raw) > _MAX_RAW_KEY_LEN:
        return None
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or not parts[2]:
        return None
    prefix = parts[1]
    if len(prefix) != ApiKey.PREFIX_LEN or any(c not in _PREFIX_ALPHABET for c in prefix):
        return None
    return prefix


@transaction.atomic
def create_api_key(
    tenant: Tenant, *, name: str = "default", role: str = Role.MEMBER, by: Actor = None
) -> tuple[ApiKey, str]:
    """Create an API key; the raw key is returned here once and only its hash is stored."""
    if role not in Role.values:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(Role.values)}")
    name = (name or "").strip() or "default"
    if len(name) > ApiKey._meta.get_field("name").max_length:  # type: ignore[operator]
        raise ValueError("key name is longer than 100 characters")
    prefix, raw = _new_raw_key()
    key = ApiKey.objects.create(
        tenant=tenant, name=name, role=Role(role), prefix=prefix, hashed=hash_key(raw)
    )
    record_audit(
        "api_key.created",
        by=by,
        tenant=tenant,
        target=key,
        data={"prefix": prefix, "name": name, "role": key.role},
    )
    return key, raw


@transaction.atomic
def revoke_api_key(key: ApiKey, *, by: Actor = None) -> ApiKey:
    """Revoke a key for good. Revoking a revoked key changes nothing and writes no audit row."""
    now = timezone.now()
    changed = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
    if changed:
        key.revoked_at = now
        record_audit(
            "api_key.revoked",
            by=by,
            tenant=key.tenant,
            target=key,
            data={"prefix": key.prefix, "name": key.name},
        )
    else:
        key.refresh_from_db(fields=["revoked_at"])
    return key


def _keys_with_prefix(prefix: str) -> QuerySet[ApiKey]:
    return ApiKey.objects.select_related("tenant").filter(prefix=prefix)


def authenticate_api_key(raw: str) -> ApiKey | None:
    """The active key matching a raw key (with its tenant loaded), or None.

    Candidates are found by the visible prefix, then the stored hash is compared in constant
    time. Revoked keys and keys of inactive tenants are refused. The raw key is never logged.
    """
    prefix = split_raw_key(raw)
    if prefix is None:
        logger.info("api key refused: malformed")
        return None
    digest = hash_key(raw)
    match: ApiKey | None = None
    for candidate in fetch_models(_keys_with_prefix, prefix):
        if hmac.compare_digest(candidate.hashed, digest):
            match = candidate
    if match is None:
        logger.info("api key refused: no match for prefix %s", prefix)
        return None
    if match.revoked_at is not None:
        logger.info("api key refused: prefix %s is revoked", prefix)
        return None
    if not match.tenant.is_active:
        logger.info("api key refused: tenant %s is inactive", match.tenant.slug)
        return None
    _touch_last_used(match)
    return match


def _touch_last_used(key: ApiKey) -> None:
    now = timezone.now()
    stale = now - LAST_USED_RESOLUTION
    if key.last_used_at is not None and key.last_used_at >= stale:
        return
    # Guarded so that concurrent requests with the same key write once per minute between them.
    updated = (
        ApiKey.objects.filter(pk=key.pk)
        .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale))
        .update(last_used_at=now)
    )
    if updated:
        key.last_used_at = now
