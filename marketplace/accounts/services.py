"""Account rules: sign-up, sign-in, passwords, organizations and memberships.

Every public function here commits at most once and raises domain errors.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, request
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from marketplace import audit, clock, ratelimit, scopes
from marketplace.accounts.models import (
    AccountType,
    Membership,
    Organization,
    OrgKind,
    Role,
    User,
    UserStatus,
)
from marketplace.accounts.signals import user_signed_up
from marketplace.auth import Principal, principal, require_org_role
from marketplace.database import db
from marketplace.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from marketplace.models import AuditEvent
from marketplace.oauth import tokens
from marketplace.pagination import paginate
from marketplace.passwords import hash_password, needs_rehash, verify_password


def normalize_email(email: str) -> str:
    return email.strip().lower()


def find_user_by_email(email: str) -> User | None:
    return db.session.scalar(select(User).where(User.email_normalized == normalize_email(email)))


def _email_taken() -> Conflict:
    return Conflict(
        "An account with this e-mail address already exists.",
        errors={"email": ["Already registered."]},
    )


def _new_user(email: str, password: str, name: str, account_type: AccountType) -> User:
    now = clock.now()
    if find_user_by_email(email) is not None:
        raise _email_taken()
    user = User(
        email=email.strip(),
        email_normalized=normalize_email(email),
        name=name.strip(),
        password_hash=hash_password(password),
        account_type=account_type,
        status=UserStatus.ACTIVE,
        created_at=now,
        password_changed_at=now,
    )
    db.session.add(user)
    return user


def _new_organization(name: str, kind: OrgKind, owner: User) -> Organization:
    org = Organization(name=name.strip(), kind=kind, created_at=clock.now())
    db.session.add(org)
    db.session.flush()
    db.session.add(
        Membership(organization_id=org.id, user=owner, role=Role.OWNER, created_at=clock.now())
    )
    return org


def sign_up(data: dict[str, Any]) -> tuple[User, Organization | None]:
    """Create a worker, client or vendor account (and the client's or vendor's organization)."""
    ratelimit.hit(f"signup:{request.remote_addr}", 30, 3600)
    account_type: AccountType = data["account_type"]
    user = _new_user(data["email"], data["password"], data["name"], account_type)
    _flush_or_email_conflict()
    organization = None
    if account_type in (AccountType.CLIENT, AccountType.VENDOR):
        org_name = data.get("organization") or f"{user.name}'s organization"
        organization = _new_organization(org_name, OrgKind(account_type.value), user)
    elif data.get("organization"):
        raise ValidationFailed(
            "Worker accounts do not create an organization.",
            errors={"organization": ["Only client and vendor sign-ups create an organization."]},
        )
    user_signed_up.send(user, account_type=account_type, organization=organization)
    audit.record(
        "user.signed_up",
        "user",
        user.id,
        organization_id=organization.id if organization else None,
        detail={"account_type": account_type.value},
        actor_user_id=user.id,
    )
    db.session.commit()
    return user, organization


def _flush_or_email_conflict() -> None:
    # The unique index decides between concurrent sign-ups with one address; it fires on flush.
    try:
        db.session.flush()
    except IntegrityError as error:
        db.session.rollback()
        if "email" in str(error.orig).lower():
            raise _email_taken() from None
        raise


def log_in(email: str, password: str, scope: str | None) -> dict:
    """Check a password and issue a first-party token pair, narrowed to `scope` if given."""
    settings = current_app.config["CROWDLINE"]
    ratelimit.hit(
        f"login:{normalize_email(email)}",
        settings.login_attempts_per_window,
        settings.login_window_seconds,
    )
    user = find_user_by_email(email)
    if not verify_password(user.password_hash if user else None, password) or user is None:
        raise Unauthorized("The e-mail address or password is wrong.", error="invalid_grant")
    if user.status != UserStatus.ACTIVE:
        raise Forbidden("This account is disabled.")
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    granted = granted_scopes(user, scope)
    token = tokens.issue_first_party_token(user.id, scopes.render(granted))
    db.session.commit()
    return token


def allowed_scopes(user: User) -> frozenset[str]:
    """Every scope this person may hold."""
    allowed = set(scopes.ACCOUNT_SCOPES[user.account_type.value])
    if is_platform_admin(user):
        allowed |= set(scopes.SCOPES)
    return frozenset(allowed)


def granted_scopes(user: User, requested: str | None) -> frozenset[str]:
    allowed = allowed_scopes(user)
    if not requested:
        return allowed
    wanted = scopes.parse(requested)
    if bad := scopes.unknown(wanted):
        raise ValidationFailed(
            f"Unknown scope: {', '.join(bad)}.", errors={"scope": [f"Unknown: {' '.join(bad)}"]}
        )
    if not wanted <= allowed:
        raise Forbidden(
            "This account may not hold the scopes: " + ", ".join(sorted(wanted - allowed)) + "."
        )
    return wanted


def is_platform_admin(user: User) -> bool:
    return bool(
        db.session.scalar(
            select(func.count())
            .select_from(Membership)
            .join(Organization)
            .where(
                Membership.user_id == user.id,
                Organization.kind == OrgKind.PLATFORM,
                Membership.role.in_([Role.OWNER, Role.ADMIN]),
            )
        )
    )


def log_out(caller: Principal) -> None:
    """Revoke the token pair the caller is using."""
    tokens.revoke(caller.token)
    db.session.commit()


def change_password(user: User, current: str, new: str) -> None:
    """Change the password and sign out every other session of this user."""
    if not verify_password(user.password_hash, current):
        raise ValidationFailed(
            "The current password is wrong.", errors={"current_password": ["Wrong password."]}
        )
    if current == new:
        raise ValidationFailed(
            "The new password must differ from the current one.",
            errors={"new_password": ["Same as the current password."]},
        )
    user.password_hash = hash_password(new)
    user.password_changed_at = clock.now()
    tokens.revoke_all_for_user(user.id, except_token_id=principal().token.id)
    audit.record("user.password_changed", "user", user.id)
    db.session.commit()


def update_account(user: User, changes: dict[str, Any]) -> User:
    """Change the caller's own name."""
    if "name" in changes:
        user.name = changes["name"].strip()
    db.session.commit()
    return user


def ensure_platform_admin(
    email: str, password: str | None, name: str = "Platform admin"
) -> tuple[User, bool]:
    """Create the platform organization and an admin in it if missing; returns (user, created)."""
    platform = db.session.scalar(select(Organization).where(Organization.kind == OrgKind.PLATFORM))
    user = find_user_by_email(email)
    created = False
    if user is None:
        if not password:
            raise ValidationFailed("A password is needed to create the platform admin.")
        user = _new_user(email, password, name, AccountType.ADMIN)
        db.session.flush()
        created = True
    if platform is None:
        platform = _new_organization("Crowdline platform", OrgKind.PLATFORM, user)
    else:
        membership = db.session.scalar(
            select(Membership).where(
                Membership.organization_id == platform.id, Membership.user_id == user.id
            )
        )
        if membership is None:
            db.session.add(
                Membership(
                    organization_id=platform.id, user=user, role=Role.ADMIN, created_at=clock.now()
                )
            )
        elif membership.role == Role.MEMBER:
            membership.role = Role.ADMIN
    audit.record(
        "platform.admin_ensured",
        "user",
        user.id if user.id else "new",
        organization_id=None,
        detail={"created": created},
        actor_user_id=None,
    )
    db.session.commit()
    return user, created


def platform_admin_exists() -> bool:
    return bool(
        db.session.scalar(
            select(func.count())
            .select_from(Membership)
            .join(Organization)
            .where(
                Organization.kind == OrgKind.PLATFORM, Membership.role.in_([Role.OWNER, Role.ADMIN])
            )
        )
    )


# --- organizations -----------------------------------------------------------------------


def list_my_organizations(args: dict[str, Any]) -> dict[str, Any]:
    caller = principal()
    query = select(Organization)
    if not caller.is_platform_admin:
        query = query.where(Organization.id.in_(list(caller.roles) or [-1]))
    return paginate(query, Organization.id, args)


def create_organization(data: dict[str, Any]) -> Organization:
    """A signed-in client or vendor user opens another organization and owns it."""
    caller = principal()
    user = caller.user
    if user is None:
        raise Forbidden("Service accounts cannot create organizations.")
    if user.account_type == AccountType.WORKER:
        raise Forbidden("Worker accounts cannot own organizations.")
    org = _new_organization(data["name"], data["kind"], user)
    audit.record("organization.created", "organization", org.id, organization_id=org.id)
    db.session.commit()
    return org


def get_organization(organization_id: int) -> Organization:
    """An organization the caller belongs to (404 for everyone else)."""
    require_org_role(organization_id)
    org = db.session.get(Organization, organization_id)
    if org is None:
        raise NotFound(f"organization {organization_id} not found")
    return org


def rename_organization(organization_id: int, name: str) -> Organization:
    require_org_role(organization_id, Role.ADMIN)
    org = get_organization(organization_id)
    old = org.name
    org.name = name.strip()
    audit.record(
        "organization.renamed",
        "organization",
        org.id,
        organization_id=org.id,
        detail={"from": old, "to": org.name},
    )
    db.session.commit()
    return org


def list_members(organization_id: int, args: dict[str, Any]) -> dict[str, Any]:
    get_organization(organization_id)
    query = select(Membership).where(Membership.organization_id == organization_id)
    return paginate(query, Membership.id, args)


def _membership(organization_id: int, membership_id: int) -> Membership:
    membership = db.session.get(Membership, membership_id, populate_existing=True)
    if membership is None or membership.organization_id != organization_id:
        raise NotFound(f"membership {membership_id} not found")
    return membership


def _check_can_grant(organization_id: int, role: Role) -> None:
    caller = principal()
    if role == Role.OWNER and not (
        caller.is_platform_admin or caller.role_in(organization_id) == Role.OWNER
    ):
        raise Forbidden("Only an owner can make another owner.")


def add_member(organization_id: int, email: str, role: Role) -> Membership:
    """Add an existing user to the organization with a role (admins and owners only)."""
    require_org_role(organization_id, Role.ADMIN)
    org = get_organization(organization_id)
    _check_can_grant(organization_id, role)
    user = find_user_by_email(email)
    if user is None:
        raise ValidationFailed(
            "No account has this e-mail address; ask them to sign up first.",
            errors={"email": ["No such account."]},
        )
    if user.account_type == AccountType.WORKER and org.kind != OrgKind.PLATFORM:
        raise ValidationFailed(
            "Worker accounts join crowds, not organizations.",
            errors={"email": ["This is a worker account."]},
        )
    exists = db.session.scalar(
        select(Membership).where(
            Membership.organization_id == organization_id, Membership.user_id == user.id
        )
    )
    if exists is not None:
        raise _already_member()
    membership = Membership(
        organization_id=organization_id, user=user, role=role, created_at=clock.now()
    )
    db.session.add(membership)
    try:
        db.session.flush()  # a concurrent add of the same person fails here, not at commit
    except IntegrityError:
        db.session.rollback()
        raise _already_member() from None
    audit.record(
        "membership.added",
        "membership",
        membership.id,
        organization_id=organization_id,
        detail={"user_id": user.id, "role": role.value},
    )
    db.session.commit()
    return membership


def _already_member() -> Conflict:
    return Conflict("This user is already a member.", errors={"email": ["Already a member."]})


def _lock_organization(organization_id: int) -> None:
    """Serialize changes to an organization's owners, so two concurrent demotions or removals
    cannot both see a second owner and leave none: a row lock on PostgreSQL, the database
    write lock on SQLite (which has no row locks)."""
    where = Organization.id == organization_id
    if db.session.get_bind().dialect.name == "sqlite":
        db.session.execute(
            update(Organization).where(where).values(name=Organization.name),
            execution_options={"synchronize_session": False},
        )
    else:
        db.session.execute(select(Organization.id).where(where).with_for_update())


def _owners(organization_id: int) -> int:
    return db.session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.organization_id == organization_id, Membership.role == Role.OWNER)
    )


def change_member_role(organization_id: int, membership_id: int, role: Role) -> Membership:
    """Give a member another role; an organization keeps at least one owner."""
    require_org_role(organization_id, Role.ADMIN)
    _lock_organization(organization_id)
    membership = _membership(organization_id, membership_id)
    _check_can_grant(organization_id, role)
    if membership.role == Role.OWNER:
        _check_can_grant(organization_id, Role.OWNER)
        if role != Role.OWNER and _owners(organization_id) <= 1:
            raise Conflict("An organization keeps at least one owner.")
    old = membership.role
    membership.role = role
    audit.record(
        "membership.role_changed",
        "membership",
        membership.id,
        organization_id=organization_id,
        detail={"user_id": membership.user_id, "from": old.value, "to": role.value},
    )
    db.session.commit()
    return membership


def remove_member(organization_id: int, membership_id: int) -> None:
    """Take a member out of the organization; an organization keeps at least one owner."""
    require_org_role(organization_id, Role.ADMIN)
    _lock_organization(organization_id)
    membership = _membership(organization_id, membership_id)
    if membership.role == Role.OWNER:
        _check_can_grant(organization_id, Role.OWNER)
        if _owners(organization_id) <= 1:
            raise Conflict("An organization keeps at least one owner.")
    audit.record(
        "membership.removed",
        "membership",
        membership.id,
        organization_id=organization_id,
        detail={"user_id": membership.user_id, "role": membership.role.value},
    )
    db.session.delete(membership)
    db.session.commit()


def list_audit_events(organization_id: int | None, args: dict[str, Any]) -> dict[str, Any]:
    """An organization's audit trail (its admins), or the whole log (platform admins)."""
    query = select(AuditEvent)
    if organization_id is None:
        if not principal().is_platform_admin:
            raise NotFound("not found")
    else:
        require_org_role(organization_id, Role.ADMIN)
        query = query.where(AuditEvent.organization_id == organization_id)
    if action := args.get("action"):
        query = query.where(AuditEvent.action == action)
    return paginate(query, AuditEvent.id, args)
