"""Who is who: resolving ``@username`` or an account id to a contact, learning a
contact's identity and devices from prekey bundles, safety numbers and verification.

Every change to a contact is a read-modify-write in one store transaction
(``contacts.update``); network calls (username lookups, bundle claims) happen
outside any transaction and outside any lock.
"""

from __future__ import annotations

import hmac

from msgspec import UNSET

from veil.client import contact_link, contacts
from veil.client.api import server_data
from veil.client.device import Context
from veil.client.errors import IdentityChanged, ServerRejected, UnapprovedDevice, UnknownUser
from veil.client.events import DeviceLinked
from veil.client.records import Contact
from veil.core import devices, keys, safety
from veil.core.errors import CoreError
from veil.protocol import responses as rs


class Directory:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def add_link(self, text: str) -> Contact:
        """Keep what a contact link says (``veil.client.contact_link``); no network."""
        link = contact_link.parse(text)
        if link.account == self._ctx.device.record.account:
            raise UnknownUser("that is your own contact link")

        def take(contact: Contact) -> bool:
            if contact.identity is not None and not link.matches(contact.identity):
                return False       # a link that contradicts a key we already hold
            contact.link_access_key = link.access_key
            contact.pinned_identity = link.fingerprint
            if link.username is not None and contact.username is None:
                contact.username = link.username
            return True
        contact, taken = contacts.update(self._ctx.store, link.account, take)
        if not taken:
            raise IdentityChanged(f"this contact link names another identity key than the "
                                  f"one {link.account[:8]}… uses; compare safety numbers "
                                  "before you trust either")
        return contact

    async def resolve(self, who: str) -> Contact:
        """``@username``, an account id or a contact link → the contact (created on
        first use)."""
        store = self._ctx.store
        who = who.strip()
        if contact_link.is_link(who):
            return self.add_link(who)
        if who.startswith("@"):
            name = who[1:].lower()
            known_by_name = contacts.by_username(store, name)
            if known_by_name is not None:
                return known_by_name
            try:
                found = await self._ctx.api.call("GET", f"/v1/usernames/{name}",
                                                 rs.UsernameFound)
            except ServerRejected as exc:
                if exc.status in (400, 404):
                    raise UnknownUser(f"no user named @{name} on this server") from None
                raise
            account, username = found.account_id, found.username
            if username != name:
                # A server answering @carol with bob's name could redirect @bob later.
                raise ServerRejected(502, "bad_response",
                                     f"the server answered @{name} with another name")
        else:
            account, username = who.lower(), None
            if len(account) != 32 or any(c not in "0123456789abcdef" for c in account):
                raise UnknownUser(f"'{who}' is neither @username nor a 32-hex account id")
        known = contacts.get(store, account)
        if username is None or (known is not None and known.username == username):
            return known or Contact(account)      # saved once it has keys or a name

        def name_it(contact: Contact) -> None:
            contact.username = username
        return contacts.update(store, account, name_it)[0]

    async def fetch_bundles(self, account: str,
                            only: list[int] | None = None) -> dict[int, keys.PreKeyBundle]:
        """Claim bundles: of the devices in ``only``, or of all devices (each claim uses up
        one of the device's one-time keys, so ask only for what a session needs)."""
        paths = ([f"/v1/keys/{account}/{d}" for d in only] if only is not None
                 else [f"/v1/keys/{account}/*"])
        bundles: dict[int, keys.PreKeyBundle] = {}
        for path in paths:
            answer = await self._claim(account, path)
            with server_data("key bundle"):
                for dev in answer.devices:
                    if dev.signed_prekey is None or dev.last_resort_kem_prekey is None:
                        continue
                    opk, pqopk = dev.one_time_prekey, dev.one_time_kem_prekey
                    bundle = keys.PreKeyBundle.from_parts(
                        dev.identity_key, dev.signed_prekey, dev.last_resort_kem_prekey,
                        opk.key if opk else None, pqopk.key if pqopk else None)
                    try:
                        _check_approval(account, dev, bundle.identity)
                    except UnapprovedDevice:
                        # Another identity as well: that is the louder warning.
                        self._note_identity(account, bundle.identity)
                        raise
                    bundles[dev.device_id] = bundle
        return bundles

    def _check_pinned(self, account: str, identity: keys.IdentityPublicKey) -> None:
        pinned = (contacts.get(self._ctx.store, account) or Contact(account)).pinned_identity
        if pinned is not None and not hmac.compare_digest(
                contact_link.identity_fingerprint(identity.to_bytes()), pinned):
            raise IdentityChanged(
                f"the server offered keys for {account[:8]}… that are not the "
                "ones their contact link names; nothing was sent")

    def _note_identity(self, account: str, identity: keys.IdentityPublicKey) -> None:
        """Record (and announce) only an identity change, nothing of any device."""
        self._check_pinned(account, identity)
        known = contacts.get(self._ctx.store, account)
        if known is None or known.identity is None or known.identity == identity.to_bytes():
            return
        contact, changed = contacts.update(
            self._ctx.store, account, lambda c: contacts.note_identity(c, identity))
        self._ctx.announce(changed, account)
        if changed and contact.identity_changed:
            raise IdentityChanged(f"the identity key of {account[:8]}… changed after you "
                                  "verified it; compare safety numbers again")

    async def _claim(self, account: str, path: str) -> rs.Bundles:
        """A bundle claim, sealed (access key, no credentials, a connection of its own)
        when we hold the contact's access key, so the server does not learn who asks."""
        api = self._ctx.api
        access = (contacts.get(self._ctx.store, account) or Contact(account)).access_key()
        if access is None:
            return await api.call("GET", path, rs.Bundles)
        try:
            return await api.call("GET", path, rs.Bundles, auth=False, access_key=access)
        except ServerRejected as exc:
            if exc.status != 401:
                raise
        # The key is stale (the contact changed it): forget it and ask as ourselves,
        # which tells the server who asks — what a claim without a key always does.
        def forget(contact: Contact) -> None:
            if contact.access_key() == access:
                contact.profile_key = contact.link_access_key = None
        contacts.update(self._ctx.store, account, forget)
        return await api.call("GET", path, rs.Bundles)

    def note_bundles(self, account: str, bundles: dict[int, keys.PreKeyBundle],
                     devices: set[int] | None) -> Contact:
        """Record the identities bundles present (and, with ``devices``, the device
        list) in one transaction; a verified contact's changed key is refused after the
        warning is committed. Bundles whose identity is not the one a contact link
        pinned are refused and nothing is recorded."""
        for bundle in bundles.values():
            self._check_pinned(account, bundle.identity)

        linked: list[int] = []

        def note(contact: Contact) -> bool:
            linked.clear()
            linked.extend(d for d in sorted(bundles) if contacts.note_linked(contact, d))
            changed = False
            for bundle in bundles.values():
                changed = contacts.note_identity(contact, bundle.identity) or changed
            if devices is not None:
                contact.devices = sorted(devices)
            return changed
        contact, changed = contacts.update(self._ctx.store, account, note)
        self._ctx.announce(changed, account)
        if account != self._ctx.device.record.account:
            for device in linked:                 # after the commit, as announce
                self._ctx.hub.emit(DeviceLinked(account, device))
        if changed and contact.identity_changed:
            raise IdentityChanged(f"the identity key of {account[:8]}… changed after you "
                                  "verified it; compare safety numbers again")
        return contact

    async def refresh_devices(self, account: str) -> None:
        """Learn a contact's identity and devices (claims one bundle per device)."""
        bundles = await self.fetch_bundles(account)
        if not bundles:
            raise UnknownUser(f"account {account[:8]}… has no devices with keys")
        self.note_bundles(account, bundles, set(bundles))

    # --- safety numbers ------------------------------------------------------------------

    def _number(self, account: str) -> tuple[safety.SafetyNumber, keys.IdentityPublicKey,
                                              bool]:
        """Inside a transaction: the safety number from the identity the sessions use,
        that identity, and whether the contact had to be brought in line with it."""
        store = self._ctx.store
        contact = contacts.get(store, account) or Contact(account)
        remote = contacts.session_identity(store, contact)
        if remote is None:
            raise UnknownUser(f"account {account[:8]}… has no published identity key")
        changed = contacts.note_identity(contact, remote)
        if changed:
            contacts.save(store, contact)
        me = self._ctx.device.record.account
        number = safety.safety_number(self._ctx.identity.public, bytes.fromhex(me), remote,
                                      bytes.fromhex(account))
        return number, remote, changed

    async def _known_identity(self, who: str) -> str:
        contact = await self.resolve(who)
        if contact.identity is None:
            await self.refresh_devices(contact.account)
        return contact.account

    async def safety_number(self, who: str) -> safety.SafetyNumber:
        account = await self._known_identity(who)
        with self._ctx.store.transaction():
            number, _, changed = self._number(account)
        self._ctx.announce(changed, account)
        return number

    async def verify(self, who: str, expected_digits: str | None = None) -> Contact:
        account = await self._known_identity(who)
        expected = None if expected_digits is None else "".join(expected_digits.split())
        store = self._ctx.store
        contact: Contact | None = None
        with store.transaction():
            number, remote, changed = self._number(account)
            if expected is None or number.digits == expected:
                contact = contacts.get(store, account) or Contact(account)
                contact.identity = remote.to_bytes()
                contact.verified, contact.identity_changed = True, False
                contacts.save(store, contact)
        self._ctx.announce(changed, account)    # committed even when the digits differ
        if contact is None:
            raise IdentityChanged(f"the safety number with {who} is not the one you compared")
        return contact

def _check_approval(account: str, dev: rs.DeviceBundle,
                    identity: keys.IdentityPublicKey) -> None:
    """Refuse a device the account's identity did not approve (docs/devices.md)."""
    approval = None if dev.approval is UNSET else dev.approval
    try:
        devices.check_device(identity, bytes.fromhex(account), dev.device_id,
                             dev.registration_id, approval)
    except CoreError:
        raise UnapprovedDevice(
            f"device {dev.device_id} of {account[:8]}… was not approved by the account's "
            "identity (added by the server?); nothing was sent or recorded") from None


__all__ = [
    "Directory",
]
