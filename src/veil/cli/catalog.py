"""The words of the ``veil`` command line: one dict per language, the same keys and the
same ``{fields}`` in each (tests/unit/cli/test_i18n.py checks both). Read them through
:func:`veil.cli.i18n.t`; to add a line, add its key to ``EN`` here and ``ZH`` in
:mod:`veil.cli.catalog_zh` together.

Terms kept the same everywhere in Chinese: 安全码 safety number, 发件箱 outbox,
密封发送 sealed sender, 设备 device, 联系人 contact, 服务器 server, 主目录 home directory,
口令 passphrase, 信任根 trust root, 指纹 fingerprint, 混合网络 mixnet, 数据目录 data
directory, 邀请码 invite token.
"""

from __future__ import annotations

from typing import Final

from veil.cli.catalog_zh import ERRORS_ZH, SAID_ENOUGH_ZH, SERVER_LINES_ZH, ZH

EN: Final[dict[str, str]] = {
    # main.py: the group, and how failures are printed
    "cmd.veil": "Veil: private communication you can host yourself.",
    "opt.version": "Show the version and exit.",
    "main.error_line": "veil: {message}",
    "main.interrupted": "interrupted",
    "err.device_unknown": "the server does not know this device any more (its data may have "
    "been reset, or this device was removed); register again with 'veil init' in a new "
    "--home, and tell your contacts your new safety number",
    # click's own words (used in Chinese only: in English click writes them itself)
    "click.error": "Error: {message}",
    "click.try_help": "Try {command} for help.",
    "click.no_such_option": "No such option: {name}",
    "click.no_such_command": "No such command {name}.",
    "click.missing_argument": "Missing argument {name}.",
    "click.missing_option": "Missing option {name}.",
    # messaging.py: shared options, passphrases, values
    "opt.home": "Identity directory (default ~/.veil; env VEIL_HOME).",
    "opt.json": "One JSON object per line.",
    "opt.proxy": "Route connections through SOCKS5, e.g. socks5://127.0.0.1:9050 (Tor).",
    "opt.via": "Route sealed sends straight to the server or through the mixnet (the server "
    "then never sees your address).",
    "opt.mix_directory": "Signed mixnet directory file (env VEIL_MIX_DIRECTORY).",
    "opt.mix_authority": "Directory authority public key, hex (env VEIL_MIX_AUTHORITY).",
    "err.cannot_read": "cannot read {path}: {reason}",
    "err.file_empty": "{path} is empty",
    "err.no_terminal_passphrase": "no terminal to ask for a passphrase: set VEIL_PASSPHRASE, "
    "give --passphrase-file FILE, or choose --no-passphrase (a key file, mode 0600)",
    "err.bad_server_url": "--server {value} is not a server URL; it looks like "
    "https://chat.example.org or http://127.0.0.1:8470",
    "err.bad_username": "--username {value}: a username is 3–32 characters of a-z, A-Z, "
    "0-9 and _",
    "err.text_twice": "give the text or --text-file, not both",
    "err.no_text": "give the text to send, '-' to read it from standard input, "
    "--text-file PATH, or a file to send with --file PATH",
    "prompt.new_passphrase": "Passphrase for the local store (empty: key file instead)",
    "prompt.repeat": "Repeat for confirmation",
    "prompt.passphrase": "Passphrase",
    "route.direct": "direct",
    "route.mixnet": "mixnet",
    # init, id
    "cmd.init": "Create an identity and register it with a server.",
    "opt.init.server": "Server URL, e.g. http://127.0.0.1:8470",
    "opt.init.username": "Optional unique username.",
    "opt.init.invite": "Invite token (invite-only servers).",
    "opt.init.no_passphrase": "Protect the store with a key file (mode 0600) instead of a "
    "passphrase.",
    "opt.init.passphrase_file": "Read the store's passphrase from this file (first line).",
    "opt.init.trust_root": "The server's trust-root fingerprint, from its operator: "
    "registration is refused if the server presents another.",
    "opt.init.pin": "SHA-256 fingerprint of the server's TLS certificate (printed by "
    "'veil server --tls self-signed'): every connection accepts only that certificate.",
    "err.bad_pin": "--pin {value} is not a SHA-256 certificate fingerprint (64 hex digits, "
    "colons allowed)",
    "err.pin_needs_https": "--pin needs an https:// server URL, not {server}",
    "init.tls_pinned": "TLS certificate {pin} (pinned)",
    "init.exists": "{path} already holds a Veil identity",
    "init.registered": "Registered {account} (device {device}) in {path}",
    "init.registered_as": "Registered {account} as @{username} (device {device}) in {path}",
    "init.root_pinned": "trust root {root} (pinned)",
    "init.root_presented": "trust root {root} (as the server presented it: compare it with "
    "the fingerprint the operator published)",
    "cmd.id": "Show this account id, username, identity fingerprint and pinned trust root.",
    "id.lines": "account  {account}\nusername {username}\ndevice   {device}\nkey      {key}"
    "\nserver   {server}\nroot     {root}\nlink     {link}",
    "id.link_hint": "Give your contact link to the people who should write to you: their "
    "first message is then sealed, and the server cannot swap your keys.",
    "opt.id.qr": "Also print the contact link as a QR code.",
    "cmd.contact": "Contacts: keep someone from their contact link.",
    "cmd.contact.add": "Keep the contact that LINK (their 'veil id' link) names; nothing "
    "goes to the network.",
    "contact.added": "added {who} (account {account}); your messages to them are sealed "
    "from the first one",
    # send, outbox
    "cmd.send": "Send TEXT to TO (an account id, @username or contact link); TEXT '-' "
    "reads standard input.\n\nThe message is saved in the outbox first: if the server "
    "cannot be reached it is\nsent by the next veil command that connects (or, with "
    "--wait, by this one).",
    "opt.send.text_file": "Read the message from this file (UTF-8).",
    "opt.send.wait": "If the server cannot be reached, keep trying until it is sent.",
    "send.sent.one": "sent to {to} ({count} device{sealed}, via {route})",
    "send.sent.other": "sent to {to} ({count} devices{sealed}, via {route})",
    "send.sealed": ", sealed sender",
    "send.unsealed": "not sealed: you hold no key of theirs yet, so this went with your "
    "credentials and the server saw that you wrote to {to}; with their contact link "
    "('veil id' on their side) even a first message is sealed",
    "send.flushed": "sent a message that waited in the outbox ({id})",
    "send.queued": "queued: {reason}; it will be sent by the next veil command that "
    "connects (or run 'veil send --wait', 'veil outbox --retry')",
    "send.waiting": "the server cannot be reached; waiting (Ctrl-C to stop; the message "
    "stays in the outbox)",
    "send.gave_up": "the message could not be sent and left the outbox",
    "cmd.outbox": "List the messages the server has not acknowledged yet; retry or cancel "
    "them.",
    "opt.outbox.retry": "Send what waits now.",
    "opt.outbox.cancel": "Remove the message with this id (or a unique prefix of it).",
    "outbox.no_match": "no message in the outbox has an id starting with {prefix}",
    "outbox.ambiguous": "{prefix} matches {count} messages; give more of the id",
    "outbox.cancelled": "cancelled {id} (to {to})",
    "outbox.may_arrive": " — it may still arrive: an earlier attempt's outcome is unknown",
    "outbox.kept": "{reason}; the outbox is kept",
    "outbox.line.one": "{id}  [{when}] to {to}: {text}  ({stage}, {count} attempt{error})",
    "outbox.line.other": "{id}  [{when}] to {to}: {text}  ({stage}, {count} attempts{error})",
    "outbox.last_error": ", {error}",
    "outbox.empty": "the outbox is empty",
    "outbox.stage.queued": "queued",
    "outbox.stage.sealed": "sealed",
    # recv, chat, safety, verify, conversations, history
    "cmd.recv": "Print received messages (time, id, sender, text; replies, files, "
    "reactions, edits, deletions, receipts and timer changes as short lines).\n\nFiles "
    "are saved, checked, into the downloads folder (--download-dir; --no-download lists "
    "them only). The messages shown count as read: a read receipt goes to each sender "
    "who has read receipts on (--no-read-receipts leaves them unread; 'veil receipts "
    "@who off' stops them for one person).",
    "opt.recv.follow": "Keep waiting for new messages.",
    "recv.identity_changed": "WARNING: the safety number with {who}… changed. Verify it "
    "again before trusting this conversation.",
    "cmd.chat": "Interactive chat with TO: type a line to send it, '/file PATH' to send a "
    "file; Ctrl-D to leave. Received files are saved as with 'veil recv'.",
    "chat.you": "you",
    "chat.header": "chat with {who}: type a line and press Enter to send it; Ctrl-D leaves",
    "chat.pending": "(pending: the server cannot be reached; it will be sent when it is "
    "back)",
    "chat.not_sent": "(not sent: {reason})",
    "chat.sent_from_outbox": "(sent {id}, which waited in the outbox)",
    "chat.outbox_failed": "(not sent: {id}: {reason})",
    "cmd.safety": "Show the safety number with TO, and a QR code to scan.",
    "safety.number": "Safety number with {to}:\n  {first}\n  {second}",
    "safety.verified": "verified",
    "safety.not_verified": "not verified: compare in person, then run 'veil verify {to}'",
    "cmd.verify": "Mark TO's current identity key as verified.",
    "opt.verify.number": "The safety number you compared; refused if the key changed "
    "meanwhile.",
    "verify.done": "{to} is now verified",
    "cmd.conversations": "List conversations, most recent first.",
    "cmd.history": "Show the conversation with TO (a person or '#group'): each message "
    "with the start of its id, which 'veil reply', 'react', 'edit', 'delete' and "
    "'download' take.",
    # devices.py
    "cmd.link": "Link this new device to your account: shows a code to approve on a "
    "device you already use ('veil devices approve CODE').",
    "opt.link.server": "The account's server URL (e.g. http://127.0.0.1:8470).",
    "opt.link.wait": "Seconds to wait for the approval.",
    "link.show": "On a device of your account, run:\n\n    veil devices approve {code}\n\n"
    "or scan this code:",
    "link.waiting": "waiting for the approval (Ctrl-C to give up)…",
    "link.done": "linked: this is device {device} of {who}, in {home}",
    "cmd.devices": "This account's devices: list them, approve a new one, remove one.",
    "cmd.devices.list": "List this account's devices.",
    "cmd.devices.approve": "Approve the new device that shows CODE ('veil link' on it): it "
    "receives your identity, contacts and recent history, end-to-end encrypted.",
    "opt.devices.name": "A name for the new device (kept on your devices, not the server).",
    "opt.devices.history_days": "Days of history to give it (0: none).",
    "cmd.devices.remove": "Unlink device DEVICE_ID: its credentials stop working at once.",
    "devices.line": "{id:>3}  {name} linked {linked}  last seen {seen}",
    "devices.this_one": "(this device)",
    "devices.never": "never",
    "devices.approved": "approved: device {id} is now linked to this account",
    "devices.removed": "removed device {id}: its credentials no longer work",
    # groups.py
    "cmd.group": "Groups, end-to-end encrypted (MLS): create, add, remove, leave, rename, "
    "admin, members, list. GROUP is #name or the group id.",
    "cmd.group.create": "Create the group NAME with you as its admin; --member invites "
    "people (all their devices).",
    "opt.group.member": "Invite WHO (@username, account id or contact link); repeat it "
    "for more.",
    "opt.group.description": "A description (kept inside the encryption).",
    "cmd.group.add": "Add WHO (one or more) to GROUP; admins only.",
    "cmd.group.remove": "Remove WHO from GROUP: from that moment they can neither read "
    "nor post; admins only.",
    "cmd.group.leave": "Leave GROUP; this device forgets its keys at once (the history "
    "stays).",
    "cmd.group.rename": "Give GROUP a new NAME (and --description); admins only.",
    "cmd.group.admin": "Make WHO an admin of GROUP (--demote: take it away); admins only.",
    "opt.group.demote": "Take the admin role away instead.",
    "cmd.group.members": "List the members of GROUP and their devices.",
    "cmd.group.list": "List the groups this device is in or was in.",
    "group.line.one": "#{name}  ({id}…, {count} member{role}{state})",
    "group.line.other": "#{name}  ({id}…, {count} members{role}{state})",
    "group.you_admin": ", you are an admin",
    "group.inactive": ", you are no longer in it",
    "group.created": "created #{name}",
    "group.added": "added to #{name}",
    "group.removed": "removed from #{name}",
    "group.left": "left {name}",
    "group.renamed": "renamed to #{name}",
    "group.promoted": "#{name}: an admin more",
    "group.demoted": "#{name}: an admin less",
    "group.member.one": "{who}  ({count} device){admin}",
    "group.member.other": "{who}  ({count} devices){admin}",
    "group.admin_mark": "  admin",
    "group.none": "this device is in no group",
    "group.missing.one": "{where}: {count} message from {who} did not arrive (the server "
    "may have dropped it)",
    "group.missing.other": "{where}: {count} messages from {who} did not arrive (the "
    "server may have dropped them)",
    "group.reordered": "{where}: a message from {who} arrived out of order, after a later "
    "one",
    "group.stalled.commit_withheld": "{where}: the server says the group has moved on but "
    "withholds the change that did it; this device can neither read nor send there until "
    "the server serves it (or you are invited again)",
    "group.stalled.commit_refused": "{where}: the server served a group change that does "
    "not verify; this device stays where it was and can neither read nor send there until "
    "the real change is served (or you are invited again)",
    "group.stalled.capability_refused": "{where}: the server refuses this device's key to "
    "the group's mailbox (it expired after a long time offline, or the server changed "
    "it); if this lasts, ask an admin to invite you again",
    "send.group_sent": "sent to {to} (stored once for every member)",
    # relay.py
    "relay.needs_directory": "--via mixnet needs --mix-directory FILE and --mix-authority "
    "HEX (or VEIL_MIX_DIRECTORY and VEIL_MIX_AUTHORITY)",
    "relay.timeout": "timed out before every packet left for the mixnet",
    # serve.py
    "cmd.server": "Run the Veil server (SQLite under --data; nothing else to install).",
    "opt.server.data": "Data directory (database, keys, logs). Default: ./veil-data",
    "opt.server.host": "Address to listen on. Default: 127.0.0.1",
    "opt.server.port": "Port to listen on. Default: 8470",
    "opt.server.config": "TOML file overriding the embedded defaults.",
    "opt.server.tls_cert": "TLS certificate (PEM, the chain may follow) for HTTPS; with "
    "--tls-key.",
    "opt.server.tls_key": "The TLS certificate's private key (PEM, unencrypted).",
    "opt.server.tls": "'self-signed': make and keep a certificate under DATA/tls; clients "
    "pin the fingerprint printed at start (veil init --pin).",
    "opt.server.insecure_public": "Serve plain HTTP on a non-loopback address (only "
    "behind a proxy that terminates TLS).",
    "server.tls_twice": "give either --tls self-signed or --tls-cert/--tls-key, not both",
    "server.tls_pair": "--tls-cert and --tls-key go together",
    "cmd.server.invite": "Mint single-use invite tokens for invite-only registration.",
    "opt.invite.hours": "How long each invite stays valid.",
    "cmd.server.backup": "Back up the database (online, while the server runs) and the key "
    "files.",
    "opt.backup.data": "The server's data directory (the server may be running).",
    "opt.backup.out": "The backup file to write (must not exist; written with mode 0600).",
    "cmd.server.restore": "Restore a backup into a new (or empty) data directory.",
    "opt.restore.from": "A file written by 'veil server backup'.",
    "opt.restore.data": "The data directory to restore into (new or empty).",
    "restore.needs_data": "restore needs --data NEWDIR, the directory to restore into",
    "cmd.server.keys": "The trust root (kept offline) and the server signing key it "
    "certifies.",
    "cmd.keys.init_root": "Create a trust root; print the fingerprint clients pin (veil "
    "init --trust-root).",
    "opt.init_root.out": "Where to write the root's private key (not the data directory).",
    "cmd.keys.certify": "Make a fresh server signing key, certified by the root, in the "
    "data directory.",
    "opt.certify.root": "The trust root's private key (from init-root).",
    "opt.keys.data": "The server's data directory.",
    "opt.certify.days": "How long the server key's certificate is valid.",
    "opt.certify.key_id": "Id of the new server key (default: the installed one's + 1).",
    "opt.certify.revoke_older": "Clients stop accepting every older server key (after a "
    "compromise).",
    "cmd.keys.move_root": "Take the trust root out of a data directory written by an "
    "earlier version.",
    "opt.move_root.out": "Where to keep the root's private key, outside the data directory.",
    "cmd.keys.show": "Print the root fingerprint, server key id and expiry, and the "
    "revocation floor.",
    "keys.cannot_read_root": "cannot read the trust root {path}: {reason}",
    "keys.not_a_root": "{path} is not a trust root key: {reason}",
    "keys.root_exists": "{path} exists; refusing to overwrite a trust root",
    "keys.root_written": "trust root written to {path} (keep it offline)",
    "keys.fingerprint": "fingerprint {fingerprint}",
    "keys.certified": "server key {key_id} certified for {days} days in {path}{revoked}; "
    "restart the server to use it",
    "keys.older_revoked": "; older keys revoked",
    "keys.target_exists": "{path} exists; refusing to overwrite it",
    "keys.root_moved": "trust root moved to {path} (keep it offline); fingerprint "
    "{fingerprint}",
    "keys.no_server_key": "{path} holds no server key yet",
    "keys.show": "fingerprint {fingerprint}\nserver key  {key_id} (expires {expires})"
    "\nrevoked     ids below {floor}",
    # mix.py
    "cmd.mix": "Anonymous routing: Sphinx mix nodes, providers and the signed directory.",
    "cmd.mix.keygen": "Make a node key (16-byte id and the seed of its per-epoch Sphinx "
    "keys).",
    "opt.mix.keygen.out": "Node key file to write (mode 600).",
    "cmd.mix.descriptor": "Write a node's public descriptor for the directory authority.",
    "opt.mix.layer": "Mix layer (1..L); 0 for a provider.",
    "opt.mix.address": "HOST:PORT the node listens on.",
    "opt.mix.epochs": "How many epochs of public keys to publish, from the current one.",
    "cmd.mix.directory": "Make the authority key, sign a directory, verify one.",
    "cmd.mix.directory.keygen": "Make the directory authority's Ed25519 key; prints its "
    "public key.",
    "opt.mix.authority_out": "Authority key file (mode 600).",
    "cmd.mix.directory.sign": "Sign a directory listing DESCRIPTORS (files written by "
    "``veil mix descriptor``).",
    "cmd.mix.directory.verify": "Check a directory's signature and print its nodes by "
    "layer.",
    "opt.mix.authority_public": "Authority public key (hex).",
    "opt.mix.idle_timeout": "Seconds without a whole frame after which a link is closed.",
    "opt.mix.authority": "Directory authority public key (hex).",
    "opt.mix.listen": "HOST:PORT; default: the directory's.",
    "cmd.mix.node": "Run a mix node of layer LAYER until SIGTERM.",
    "opt.mix.max_pending": "Packets held at once; beyond this new packets are shed.",
    "opt.mix.replay_capacity": "Replay tags kept per key epoch; when full the node fails "
    "closed.",
    "cmd.mix.provider": "Run a provider (the mixnet's exit) that POSTs messages to "
    "SINK_URL.",
    "opt.mix.sink_url": "Veil server URL that takes submissions.",
    "cmd.mix.send": "Send MESSAGE_FILE (``-`` for stdin) to the provider through the "
    "mixnet.",
    "opt.mix.rate": "Packets per second.",
    "opt.mix.mean_delay": "Mean per-hop mixing delay in seconds.",
    "opt.mix.proxy": "socks5://[user:pass@]HOST:PORT (e.g. Tor).",
    "opt.mix.loop_fraction": "Share of cover packets that are loops (a one-shot sender "
    "leaves before they return, so the default is drop cover only).",
    "mix.layer_rule": "a mix has a layer >= 1, a provider has layer 0",
    "mix.not_a_descriptor": "{path} is not a descriptor",
    "mix.listed_as": "the directory lists this node as {role} layer {layer}",
    "mix.not_a_provider": "the directory does not list this node as a provider",
    "mix.timeout": "timed out before every fragment left",
    # demo.py
    "cmd.demo": "Alice and Bob talk through a throw-away Veil server started in-process.",
    "opt.demo.json": "Print one JSON object instead.",
    "demo.script.1": "Hi Bob! You are offline; the server keeps this envelope for you.",
    "demo.script.2": "It cannot read it or store who sent it, though it saw me send these "
    "two (first contact goes with my credentials until Bob answers).",
    "demo.script.3": "Back online. Got both, and I answer with sealed sender.",
    "demo.script.4": "Post-quantum from the first message: PQXDH with ML-KEM-768.",
    "demo.title": "Veil demo: a throw-away server, Alice and Bob",
    "demo.who": "server {server}  ·  alice {alice}  ·  bob {bob}",
    "demo.col_sender": "sender",
    "demo.col_read": "what the recipient read",
    "demo.col_stored": "what the server stored meanwhile",
    "demo.stored_row": "→ {recipient} dev {device}: {size} B {start}",
    "demo.nothing": "(nothing)",
    "demo.nothing_read": "(offline: nothing read yet)",
    "demo.sealed": " (sealed sender)",
    "demo.columns": "Columns of the server's envelope table: {columns} — none names a "
    "sender.",
    "demo.safety_number": "Safety number (both sides): {number}",
    "demo.match": "match",
    "demo.mismatch": "MISMATCH",
    # files (transfer.py, issue 12 §1)
    "opt.send.file": "Send this file (encrypted here; any size up to the server's limit), "
    "with TEXT as its caption. TO may be a group ('#name'). A cut-off upload waits in the "
    "outbox and goes on from where it stopped with the next command that connects "
    "('veil outbox --retry').",
    "send.file_sent": "sent {name} ({size}) to {to}",
    "send.file_queued": "saved in the outbox: the upload goes on from where it stopped "
    "with the next veil command that connects, e.g. 'veil outbox --retry' ({reason})",
    "outbox.file_waiting": " [a file upload waits: it goes on from where it stopped]",
    "outbox.file_sent": "the file upload of {id} finished and its message was sent",
    "file.line": "📎 {name} ({size}, {type})",
    "file.saved_at": " → {path}",
    "file.saved": "saved {name} → {path}",
    "file.uploading": "sending",
    "file.downloading": "receiving",
    "file.resumed_up": "{name}: upload resumed at {at} MiB of {total}",
    "file.resumed_down": "{name}: download resumed at {at} MiB of {total}",
    "file.refused": "{name} (message {id}) was refused and deleted, never shown: {reason}",
    "file.not_saved": "{name} (message {id}) was not saved: {reason}; "
    "'veil download' tries again",
    "file.none": "message {id} carries no file",
    "opt.recv.download_dir": "Save received files in this folder (default: the downloads "
    "folder in the home, e.g. ~/.veil/downloads).",
    "opt.recv.no_download": "Do not save received files now: list them (name, size, type); "
    "'veil download CONV MESSAGE_ID' saves one later.",
    "opt.recv.no_read": "Do not mark the messages shown as read (no read receipts go "
    "for them).",
    "chat.file_sent": "(sent {name})",
    # display.py: messages, notices, history
    "err.bad_message_id": "{value} is not a message id: give the id or its first 8 (or "
    "more) hex digits, as 'veil history' shows them",
    "msg.no_match": "no message of that conversation has an id starting with {prefix}",
    "msg.ambiguous": "{count} messages have an id starting with {prefix}: give more digits",
    "msg.unsupported": "(unsupported message: sent by a newer Veil; kept)",
    "msg.disappearing": " ⏱",
    "msg.deleted": "(deleted)",
    "msg.edited": " (edited)",
    "msg.read_mark": "  ✓✓ read",
    "msg.delivered_mark": "  ✓ delivered",
    "msg.reply_to": "↪ reply to {quote}",
    "msg.quote": "{id} “{text}”",
    "msg.a_file": "a file",
    "msg.reactions": "reactions: {reactions}",
    "change.edited": "{who} edited {id}: {text}",
    "change.deleted": "{who} deleted {id} for everyone",
    "change.reacted": "{who} reacted {emoji} to {id}",
    "change.unreacted": "{who} took back their reaction to {id}",
    "change.delivered": "{id} delivered to {who}",
    "change.read": "{id} read by {who}",
    "change.expired": "{id} disappeared (its timer ran out)",
    "change.other": "{id} changed ({change})",
    "change.typing": "{who} is typing…",
    "timer.set_by": "{who} set messages to disappear after {duration}",
    "timer.off_by": "{who} turned disappearing messages off",
    "dur.second.one": "{count} second",
    "dur.second.other": "{count} seconds",
    "dur.minute.one": "{count} minute",
    "dur.minute.other": "{count} minutes",
    "dur.hour.one": "{count} hour",
    "dur.hour.other": "{count} hours",
    "dur.day.one": "{count} day",
    "dur.day.other": "{count} days",
    "dur.week.one": "{count} week",
    "dur.week.other": "{count} weeks",
    # conversation.py
    "cmd.reply": "Reply to message MESSAGE_ID of CONV (a person or '#group') with TEXT "
    "(or a file: --file), quoting it.",
    "opt.reply.file": "Send this file with the reply.",
    "cmd.react": "React to message MESSAGE_ID of CONV with one EMOJI (replacing your "
    "earlier reaction); --remove takes it back.",
    "opt.react.remove": "Take back your reaction.",
    "err.react_args": "give one EMOJI, or --remove (not both)",
    "cmd.edit": "Change the text of your message MESSAGE_ID of CONV (within a day); "
    "everyone sees it marked edited.",
    "cmd.delete": "Delete message MESSAGE_ID of CONV from this device, or with "
    "--for-everyone your own message on every device of everyone (within a day).",
    "opt.delete.for_everyone": "Delete your message for everyone: they keep a 'deleted' "
    "line without its text or files.",
    "cmd.timer": "Show CONV's disappearing-message timer, or set it: off, or 30s to 4 "
    "weeks (e.g. 30s, 5m, 1h, 1d, 1w, or seconds). In a group only an admin may.",
    "err.bad_timer": "{value} is not a timer: off, or a number with s, m, h, d or w "
    "(30s to 4w)",
    "timer.is": "messages disappear after {duration}",
    "timer.is_off": "disappearing messages are off",
    "timer.now": "messages now disappear after {duration}",
    "timer.now_off": "disappearing messages are now off",
    "cmd.receipts": "Turn read receipts with WHO on or off: when off you send them none "
    "and see none of theirs (delivery receipts still go).",
    "receipts.on": "read receipts with {who} are on",
    "receipts.off": "read receipts with {who} are off: you send none and see none",
    "cmd.download": "Save the files of message MESSAGE_ID of CONV (checked before they "
    "are shown; resumed if an earlier try stopped).",
    "conv.queued": "saved in the outbox: it goes with the next veil command that connects "
    "({reason})",
    "conv.replied": "replied to {id}",
    "conv.reacted": "reacted {emoji} to {id}",
    "conv.unreacted": "took back your reaction to {id}",
    "conv.edited": "edited {id}",
    "conv.deleted_everyone": "deleted {id} for everyone",
    "conv.deleted_me": "deleted {id} from this device",
    # admin.py: veil admin (issue 13 §4)
    "cmd.admin": "Operate a running server through its admin listener: status, alerts, "
    "blocks, deny rules, reload, the audit log, invites.",
    "opt.admin.data": "The server's data directory (it holds admin/address and admin/token). "
    "Default: ./veil-data",
    "opt.admin.config": "The server's config file (for audit verify of a stopped server).",
    "opt.admin.after": "Export the records after this sequence number.",
    "cmd.admin.status": "The server's version, addresses, connections, blocks and alerts.",
    "cmd.admin.alerts": "The most recent alerts of the detection rules.",
    "cmd.admin.blocks": "The addresses blocked now (as keyed hashes) and for how long.",
    "cmd.admin.lift": "Lift a block before its time (its id from 'veil admin blocks').",
    "cmd.admin.deny": "Refuse a network (CIDR, IPv4 or IPv6) from now on, kept across "
    "restarts; without CIDR, list the rules added so.",
    "cmd.admin.allow": "Remove a deny rule added with 'veil admin deny'.",
    "cmd.admin.reload": "Read the config file again ([network] and [rules]), as SIGHUP does.",
    "cmd.admin.invites": "Mint single-use invite tokens.",
    "cmd.admin.audit": "The tamper-evident audit log.",
    "cmd.admin.audit.verify": "Check the audit chain and its signed checkpoints (works on a "
    "stopped server's data directory too).",
    "cmd.admin.audit.export": "Print the audit log as JSON lines (for a SIEM).",
    "admin.not_running": "no running server found for {data}: start it with 'veil server "
    "--data {data}' (or give the right --data)",
    "admin.token_unreadable": "cannot read the admin token {path}: run this as the user "
    "that runs the server",
    "admin.tls_failed": "the admin listener {url} failed the TLS check: {reason}",
    "admin.refused": "the admin listener refused the request (HTTP {status})",
    "admin.status.server": "Veil {version} serving {url}, up {uptime} s",
    "admin.status.admin": "admin listener: {url} (metrics at /metrics)",
    "admin.status.registration": "registration: {mode}",
    "admin.status.connections": "connections: {kinds}",
    "admin.status.protection": "blocks in force: {blocks}; alerts since start: {alerts}",
    "admin.status.messages": "envelopes since start: {stored} stored, {delivered} delivered",
    "admin.alerts.line": "{rule}: {count} events in {window} s from {source} (blocked "
    "{blocked} s)",
    "admin.alerts.none": "no alerts",
    "admin.blocks.line": "{id}  {rule}  {source}  {left} s left  (offence {count})",
    "admin.blocks.none": "no address is blocked",
    "admin.lifted": "lifted block {id}",
    "admin.denied": "denied {cidr}: its connections are refused from now on",
    "admin.rules.none": "no deny rules were added at run time",
    "admin.allowed": "removed the deny rule {cidr}",
    "admin.allow_none": "there was no runtime deny rule {cidr}",
    "admin.reloaded": "configuration reloaded",
    "admin.audit.ok": "audit log intact: {records} records, {checkpoints} signed checkpoints",
    "admin.audit.broken": "audit log BROKEN at record {seq}: {reason} ({records} records "
    "checked)",
}


CATALOGS: Final[dict[str, dict[str, str]]] = {"en": EN, "zh": ZH}


__all__ = [
    "CATALOGS",
    "EN",
    "ERRORS_ZH",
    "SAID_ENOUGH_ZH",
    "SERVER_LINES_ZH",
    "ZH",
]
