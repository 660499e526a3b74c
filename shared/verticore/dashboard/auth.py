"""Login and roles for the Verticore hub.

Users live in a YAML file, ``$VERTICORE_HOME/dashboard_users.yaml`` (or ``$VERTICORE_DASHBOARD_USERS``),
managed with ``verticore dashboard-users add/list/remove``; it stores bcrypt hashes, never passwords::

    cookie_key: <random secret that signs the re-login cookie>
    users:
      ann: {name: Ann Smith, role: agent, password_hash: $2b$12$...}

When the hub asks for a login (:func:`login_policy`):

* users are configured                          -> login form (streamlit-authenticator), always;
* no users, served on a non-loopback address    -> the hub shows nothing but how to add a user;
  ``streamlit run hub.py`` without ``--server.address`` listens on every interface, so it counts;
* no users, ``VERTICORE_DASHBOARD_LOGIN=required`` -> the same refusal (e.g. behind a local reverse proxy);
* no users, loopback (``make demo``)             -> no login, everyone is admin (a local demo).

Roles, lowest first: ``viewer`` (read-only views), ``agent`` (ticket replies/claims/resolves, KB uploads and
deletes, webhook re-sends), ``admin`` (also configs, watchlists, webhooks and API keys). Pages use
:func:`require_role` to hide controls and :func:`check_role` again inside the action handlers.
"""
from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, VerticoreError
from ..settings import get_settings

ROLES: tuple[str, ...] = ("viewer", "agent", "admin")
USERS_ENV = "VERTICORE_DASHBOARD_USERS"
LOGIN_ENV = "VERTICORE_DASHBOARD_LOGIN"
USERS_FILE_NAME = "dashboard_users.yaml"
COOKIE_NAME = "verticore_hub_auth"
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_BYTES = 72  # bcrypt only reads 72 bytes; longer ones are refused rather than silently cut
_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


class DashboardPermissionError(VerticoreError):
    """The signed-in user's role does not allow this action."""


@dataclass(frozen=True)
class DashboardUser:
    """One hub user (the password only as a bcrypt hash)."""

    username: str
    name: str
    role: str
    password_hash: str = ""


LOCAL_ADMIN = DashboardUser("local", "Local demo", "admin")


@dataclass
class UsersFile:
    """The parsed users file."""

    users: dict[str, DashboardUser] = field(default_factory=dict)
    cookie_key: str = ""
    cookie_expiry_days: float = 1.0


def users_path() -> Path:
    """``$VERTICORE_DASHBOARD_USERS``, else ``$VERTICORE_HOME/dashboard_users.yaml``."""
    env = get_settings().dashboard_users
    if env is not None:
        return env
    from . import home

    return home() / USERS_FILE_NAME


def _check_username(username: str) -> str:
    username = (username or "").strip()
    if not _USERNAME_RE.fullmatch(username):
        raise DataError(f"invalid user name {username!r}: 1-64 letters, digits or _ . @ -, starting with a letter or digit")
    return username


def _check_role_name(role: str) -> str:
    if role not in ROLES:
        raise DataError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return role


def _is_bcrypt_hash(value: str) -> bool:
    return bool(re.fullmatch(r"\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}", value or ""))


def load_users(path: Path | None = None) -> UsersFile:
    """Read the users file; a missing file means no users. Anything malformed raises :class:`DataError`
    (the hub then refuses to show anything rather than guessing)."""
    import yaml

    path = path or users_path()
    if not path.exists():
        return UsersFile()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read dashboard users file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("users") or {}, dict):
        raise DataError(f"dashboard users file {path} must be a mapping with a 'users' mapping")
    out = UsersFile(cookie_key=str(data.get("cookie_key") or ""))
    try:
        out.cookie_expiry_days = float(data.get("cookie_expiry_days", 1.0))
    except (TypeError, ValueError):
        raise DataError(f"dashboard users file {path}: cookie_expiry_days must be a number") from None
    for username, entry in (data.get("users") or {}).items():
        where = f"dashboard users file {path}, user {username!r}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected a mapping with name, role and password_hash")
        _check_username(str(username))
        role = str(entry.get("role", ""))
        if role not in ROLES:
            raise DataError(f"{where}: unknown role {role!r}; roles: {', '.join(ROLES)}")
        digest = str(entry.get("password_hash", ""))
        if not _is_bcrypt_hash(digest):
            # A plain password (or anything else) is never accepted as a credential.
            raise DataError(f"{where}: password_hash is not a bcrypt hash; set it with "
                            f"`verticore dashboard-users add {username} --role {role or 'viewer'}`")
        out.users[str(username)] = DashboardUser(str(username), str(entry.get("name") or username), role, digest)
    return out


def save_users(users: UsersFile, path: Path | None = None) -> Path:
    """Write the users file atomically (the temp file is created 0600, so the rename keeps it private)."""
    import yaml

    from ..io import atomic_write_text

    path = path or users_path()
    data: dict[str, Any] = {
        "cookie_key": users.cookie_key or secrets.token_urlsafe(32),
        "cookie_expiry_days": users.cookie_expiry_days,
        "users": {u.username: {"name": u.name, "role": u.role, "password_hash": u.password_hash}
                  for u in sorted(users.users.values(), key=lambda u: u.username)},
    }
    header = "# Verticore hub users: manage with `verticore dashboard-users add/list/remove`. Hashes only (bcrypt).\n"
    return atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False))


def hash_password(password: str) -> str:
    """A bcrypt hash of ``password`` (8+ characters, at most 72 bytes)."""
    import bcrypt

    if len(password or "") < MIN_PASSWORD_CHARS:
        raise DataError(f"password too short: use at least {MIN_PASSWORD_CHARS} characters")
    raw = password.encode("utf-8")
    if len(raw) > MAX_PASSWORD_BYTES:
        raise DataError(f"password too long: bcrypt uses at most {MAX_PASSWORD_BYTES} bytes")
    return bcrypt.hashpw(raw, bcrypt.gensalt(12)).decode("ascii")


def check_password(password: str, password_hash: str) -> bool:
    """True when ``password`` matches the bcrypt hash (never raises on odd input)."""
    import bcrypt

    raw = (password or "").encode("utf-8")
    if not raw or len(raw) > MAX_PASSWORD_BYTES or not _is_bcrypt_hash(password_hash):
        return False
    return bcrypt.checkpw(raw, password_hash.encode("ascii"))


def add_user(username: str, password: str, role: str, name: str | None = None, *, replace: bool = False,
             path: Path | None = None) -> DashboardUser:
    """Add (or with ``replace`` update) a user; the password is stored only as a bcrypt hash."""
    username, role = _check_username(username), _check_role_name(role)
    users = load_users(path)
    if username in users.users and not replace:
        raise DataError(f"user {username!r} already exists; pass --replace to change the password or role")
    user = DashboardUser(username, (name or "").strip() or username, role, hash_password(password))
    users.users[username] = user
    save_users(users, path)
    return user


def remove_user(username: str, path: Path | None = None) -> None:
    """Remove a user; a signed-in session of that user loses its access on its next rerun."""
    users = load_users(path)
    if username not in users.users:
        raise DataError(f"no dashboard user named {username!r}")
    del users.users[username]
    save_users(users, path)


# -- when to ask for a login -----------------------------------------------------------------------
def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; ``""`` (every interface) and anything else is not.

    ``None`` means no server listens at all (the script runs under ``AppTest`` or bare): nothing is exposed.
    """
    if address is None:
        return True
    host = address.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or "": may be reachable from elsewhere


def served_address() -> str | None:
    """The address the Streamlit server is bound to (``""``: every interface), or None when no real
    server runs this script (``AppTest`` runs it on a stand-in runtime, bare mode has none)."""
    import streamlit as st
    from streamlit.runtime import Runtime

    if not Runtime.exists() or type(Runtime.instance()) is not Runtime:
        return None
    return str(st.get_option("server.address") or "")


def login_forced() -> bool:
    """``VERTICORE_DASHBOARD_LOGIN=required`` asks for a login even on loopback."""
    return get_settings().dashboard_login


def login_policy(address: str | None, users_configured: bool, forced: bool = False) -> str:
    """``"login"`` (users configured), ``"refuse"`` (a login is needed but nobody can log in) or ``"open"``."""
    if users_configured:
        return "login"
    if forced or not is_loopback(address):
        return "refuse"
    return "open"


def current_policy(users: UsersFile | None = None) -> str:
    """:func:`login_policy` for this server and users file; a broken users file counts as configured
    (so the hub fails closed)."""
    if users is None:
        try:
            users = load_users()
        except DataError:
            return "login"
    return login_policy(served_address(), bool(users.users), login_forced())


# -- who is signed in --------------------------------------------------------------------------------
def current_user() -> DashboardUser | None:
    """The signed-in user, :data:`LOCAL_ADMIN` on an open local demo, or None.

    The role is read from the users file on every call, so removing or demoting a user takes effect
    on that user's next click.
    """
    import streamlit as st

    try:
        users = load_users()
    except DataError:
        return None
    if current_policy(users) == "open":
        return LOCAL_ADMIN
    if st.session_state.get("authentication_status") is not True:
        return None
    return users.users.get(str(st.session_state.get("username") or ""))


def has_role(role: str) -> bool:
    """True when the current user's role is ``role`` or higher."""
    user = current_user()
    return user is not None and ROLES.index(user.role) >= ROLES.index(_check_role_name(role))


def require_role(role: str, what: str = "This") -> bool:
    """For the UI: True when the current user may do ``what``; otherwise shows a small caption
    saying which role it needs and returns False (the caller hides or disables the control)."""
    import streamlit as st

    if has_role(role):
        return True
    user = current_user()
    st.caption(f":material/lock: {what} needs the **{role}** role"
               + (f" (you are {user.role})." if user else " (not signed in)."))
    return False


def check_role(role: str, what: str = "this action") -> None:
    """For action handlers: raise :class:`DashboardPermissionError` unless the current user has ``role``."""
    if not has_role(role):
        user = current_user()
        raise DashboardPermissionError(f"{what} needs the {role} role"
                                       + (f"; you are {user.role}" if user else "; you are not signed in"))


def allowed(role: str, what: str = "this action") -> bool:
    """For inline action handlers: :func:`check_role` that shows the refusal as an error and returns False."""
    import streamlit as st

    try:
        check_role(role, what)
    except DashboardPermissionError as exc:
        st.error(str(exc), icon=":material/lock:")
        return False
    return True


def guard_page() -> DashboardUser | None:
    """For a page run on its own (``streamlit run page.py``): stop unless the hub's rules let the visitor in."""
    import streamlit as st

    user = current_user()
    if user is None:
        st.warning("Sign in through the Verticore hub (`make demo` or `streamlit run shared/verticore/dashboard/hub.py`) "
                   "to see this page.", icon=":material/lock:")
        st.stop()
    return user


def _refusal(address: str | None, path: Path) -> str:
    where = "on every interface" if address == "" else (f"on {address}" if address else "with a login required")
    return (f"This hub is served {where} and no dashboard users are configured, so it shows nothing.\n\n"
            f"Add a user, then reload:\n\n"
            f"```\nverticore dashboard-users add NAME --role admin\n```\n\n"
            f"(users file: `{path}`). For a local demo without a login, serve on 127.0.0.1 (`make demo`).")


def gate() -> DashboardUser:
    """The hub's front door: returns the user to show pages for, or stops the script after drawing
    the login form / the refusal. Draws the sidebar's "signed in as" line and the logout button."""
    import streamlit as st

    path = users_path()
    try:
        users = load_users(path)
    except DataError as exc:
        st.error(f"The dashboard users file is broken, so the hub shows nothing: {exc}", icon=":material/lock:")
        st.stop()
    policy = current_policy(users)
    if policy == "open":
        st.sidebar.caption(":material/lock_open: Local demo on loopback, no users configured: no login, everyone is admin.")
        return LOCAL_ADMIN
    if policy == "refuse":
        st.title("Verticore")
        st.error(_refusal(served_address(), path), icon=":material/lock:")
        st.stop()

    import streamlit_authenticator as stauth
    from streamlit_authenticator.utilities.exceptions import LoginError

    credentials = {"usernames": {u.username: {"name": u.name, "password": u.password_hash, "roles": [u.role]}
                                 for u in users.users.values()}}
    # Without a stored key, cookies are signed with a per-process key: they just stop working on restart.
    cookie_key = users.cookie_key or st.session_state.setdefault("_verticore_cookie_key", secrets.token_urlsafe(32))
    authenticator = stauth.Authenticate(credentials, COOKIE_NAME, cookie_key, users.cookie_expiry_days,
                                        auto_hash=False, login_sleep_time=0.2)
    # The cookie manager is a zero-height iframe plus a style block; keep both from leaving a gap on top.
    st.html('<style>div[data-testid="stElementContainer"]:has(iframe[height="0"]),'
            'div[data-testid="stElementContainer"]:has(style:only-child){display:none}</style>')
    if st.session_state.get("authentication_status") is not True:
        st.title("Verticore")
        try:
            authenticator.login(location="main", fields={"Form name": "Sign in", "Username": "Username",
                                                          "Password": "Password", "Login": "Sign in"})
        except (LoginError, ValueError):  # e.g. a password over bcrypt's 72 bytes
            st.session_state["authentication_status"] = False
        if st.session_state.get("authentication_status") is False:
            st.error("Wrong username or password.")
    user = current_user()
    if user is None:
        if st.session_state.get("authentication_status") is True:  # removed from the users file meanwhile
            authenticator.logout(location="unrendered")
            st.warning("Your account no longer exists; sign in again.")
        st.stop()
    with st.sidebar:
        st.caption(f":material/person: Signed in as **{user.name}** ({user.role})")
        if st.button("Log out", key="verticore_logout", icon=":material/logout:"):
            # Clears the session, deletes the cookie, and sets "logout" so a cookie not yet deleted
            # cannot sign this session straight back in.
            authenticator.logout(location="unrendered")
            st.success("You are logged out.")
            st.stop()  # no rerun here: the cookie deletion must reach the browser first
    return user


__all__ = ["COOKIE_NAME", "LOCAL_ADMIN", "LOGIN_ENV", "ROLES", "USERS_ENV", "DashboardPermissionError", "DashboardUser",
           "UsersFile", "add_user", "allowed", "check_password", "check_role", "current_policy", "current_user", "gate",
           "guard_page", "has_role", "hash_password", "is_loopback", "load_users", "login_forced", "login_policy",
           "remove_user", "require_role", "save_users", "served_address", "users_path"]
