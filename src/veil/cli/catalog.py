"""The words of the ``veil`` command line: one dict per language, the same keys and the
same ``{fields}`` in each (tests/unit/cli/test_i18n.py checks both). Read them through
:func:`veil.cli.i18n.t`; to add a line, add its key to ``EN`` and ``ZH`` together.

Terms kept the same everywhere in Chinese: 安全码 safety number, 发件箱 outbox,
密封发送 sealed sender, 设备 device, 联系人 contact, 服务器 server, 主目录 home directory,
口令 passphrase, 信任根 trust root, 指纹 fingerprint, 混合网络 mixnet, 数据目录 data
directory, 邀请码 invite token.
"""

from __future__ import annotations

from typing import Final

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
    "err.no_text": "give the text to send, '-' to read it from standard input, or "
    "--text-file PATH",
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
    "cmd.recv": "Print received messages (sender, time, text).",
    "opt.recv.follow": "Keep waiting for new messages.",
    "recv.identity_changed": "WARNING: the safety number with {who}… changed. Verify it "
    "again before trusting this conversation.",
    "cmd.chat": "Interactive chat with TO: type a line to send it; Ctrl-D to leave.",
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
    "cmd.history": "Show the conversation with TO.",
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
}

ZH: Final[dict[str, str]] = {
    "cmd.veil": "Veil：可以自己托管的私密通信。",
    "opt.version": "显示版本并退出。",
    "main.error_line": "veil: {message}",
    "main.interrupted": "已中断",
    "err.device_unknown": "服务器已不认识此设备（它的数据可能被重置过，或此设备已被移除）；"
    "请用 'veil init' 在新的 --home 主目录中重新注册，并把新的安全码告诉你的联系人",
    "click.error": "错误：{message}",
    "click.try_help": "运行 {command} 查看帮助。",
    "click.no_such_option": "没有这个选项：{name}",
    "click.no_such_command": "没有这个命令：{name}",
    "click.missing_argument": "缺少参数 {name}。",
    "click.missing_option": "缺少选项 {name}。",
    "opt.home": "身份所在的主目录（默认 ~/.veil；环境变量 VEIL_HOME）。",
    "opt.json": "每行输出一个 JSON 对象。",
    "opt.proxy": "通过 SOCKS5 代理连接，例如 socks5://127.0.0.1:9050（Tor）。",
    "opt.via": "密封发送的消息直接发往服务器，或经由混合网络（这样服务器永远看不到你的地址）。",
    "opt.mix_directory": "已签名的混合网络目录文件（环境变量 VEIL_MIX_DIRECTORY）。",
    "opt.mix_authority": "目录权威机构的公钥，十六进制（环境变量 VEIL_MIX_AUTHORITY）。",
    "err.cannot_read": "无法读取 {path}：{reason}",
    "err.file_empty": "{path} 是空文件",
    "err.no_terminal_passphrase": "没有终端可以询问口令：请设置 VEIL_PASSPHRASE，"
    "或用 --passphrase-file FILE 指定口令文件，"
    "或选择 --no-passphrase（改用权限为 0600 的密钥文件）",
    "err.bad_server_url": "--server {value} 不是服务器地址；服务器地址形如 "
    "https://chat.example.org 或 http://127.0.0.1:8470",
    "err.bad_username": "--username {value}：用户名须为 3–32 个字符，只能包含 a-z、A-Z、0-9 和 _",
    "err.text_twice": "请给出消息文本或 --text-file，不能两者都给",
    "err.no_text": "请给出要发送的文本；用 '-' 从标准输入读取，或用 --text-file PATH 从文件读取",
    "prompt.new_passphrase": "本地存储的口令（留空则改用密钥文件）",
    "prompt.repeat": "请再输入一次以确认",
    "prompt.passphrase": "口令",
    "route.direct": "直连",
    "route.mixnet": "混合网络",
    "cmd.init": "创建身份并在服务器上注册。",
    "opt.init.server": "服务器地址，例如 http://127.0.0.1:8470",
    "opt.init.username": "可选的唯一用户名。",
    "opt.init.invite": "邀请码（仅限邀请注册的服务器）。",
    "opt.init.no_passphrase": "用密钥文件（权限 0600）而不是口令来保护本地存储。",
    "opt.init.passphrase_file": "从此文件（第一行）读取本地存储的口令。",
    "opt.init.trust_root": "服务器运营者提供的信任根指纹：服务器出示的信任根与之不符时拒绝注册。",
    "init.exists": "{path} 中已经有一个 Veil 身份",
    "init.registered": "已注册 {account}（设备 {device}），保存在 {path}",
    "init.registered_as": "已注册 {account}，用户名 @{username}（设备 {device}），保存在 {path}",
    "init.root_pinned": "信任根 {root}（已固定）",
    "init.root_presented": "信任根 {root}（这是服务器出示的：请与运营者公布的指纹核对）",
    "cmd.id": "显示本账户的 ID、用户名、身份指纹和已固定的信任根。",
    "id.lines": "账户    {account}\n用户名  {username}\n设备    {device}\n密钥    {key}"
    "\n服务器  {server}\n信任根  {root}\n联系链接 {link}",
    "id.link_hint": "把联系链接交给希望联系你的人：这样他们的第一条消息也是密封发送的，"
    "服务器也无法替换你的密钥。",
    "opt.id.qr": "同时把联系链接显示为二维码。",
    "cmd.contact": "联系人：通过对方的联系链接添加联系人。",
    "cmd.contact.add": "添加 LINK（对方 'veil id' 显示的链接）所指的联系人；不会连接网络。",
    "contact.added": "已添加 {who}（账户 {account}）；你发给对方的消息从第一条起就是密封发送的",
    "cmd.send": "把 TEXT 发送给 TO（账户 ID、@用户名或联系链接）；"
    "TEXT 为 '-' 时从标准输入读取。\n\n"
    "消息会先存入发件箱：如果连不上服务器，下一个连上服务器的 veil 命令会把它发出"
    "（使用 --wait 时由本命令发出）。",
    "opt.send.text_file": "从此文件（UTF-8）读取消息。",
    "opt.send.wait": "连不上服务器时一直重试，直到发出为止。",
    "send.sent.one": "已发送给 {to}（{count} 台设备{sealed}，经由{route}）",
    "send.sent.other": "已发送给 {to}（{count} 台设备{sealed}，经由{route}）",
    "send.sealed": "，密封发送",
    "send.unsealed": "未密封：你还没有对方的密钥，所以这条消息带着你的凭据发出，服务器看到了"
    "你在给 {to} 写信；有了对方的联系链接（对方运行 'veil id' 可见），第一条消息也会密封发送",
    "send.flushed": "已发出一条在发件箱中等待的消息（{id}）",
    "send.queued": "已排队：{reason}；下一个连上服务器的 veil 命令会把它发出"
    "（或运行 'veil send --wait'、'veil outbox --retry'）",
    "send.waiting": "连不上服务器，正在等待（按 Ctrl-C 停止；消息会留在发件箱中）",
    "send.gave_up": "消息无法发出，已离开发件箱",
    "cmd.outbox": "列出服务器尚未确认收到的消息；可重试或取消。",
    "opt.outbox.retry": "立即发送等待中的消息。",
    "opt.outbox.cancel": "删除 ID（或其唯一前缀）为此值的消息。",
    "outbox.no_match": "发件箱中没有 ID 以 {prefix} 开头的消息",
    "outbox.stage.queued": "排队中",
    "outbox.stage.sealed": "已加密待发",
    "outbox.ambiguous": "{prefix} 匹配了 {count} 条消息；请给出更长的 ID",
    "outbox.cancelled": "已取消 {id}（发给 {to}）",
    "outbox.may_arrive": "——它仍可能送达：之前一次尝试的结果未知",
    "outbox.kept": "{reason}；发件箱保持不变",
    "outbox.line.one": "{id}  [{when}] 发给 {to}：{text}  （{stage}，已尝试 {count} 次{error}）",
    "outbox.line.other": "{id}  [{when}] 发给 {to}：{text}  （{stage}，已尝试 {count} 次{error}）",
    "outbox.last_error": "，{error}",
    "outbox.empty": "发件箱是空的",
    "cmd.recv": "显示收到的消息（发送者、时间、内容）。",
    "opt.recv.follow": "持续等待新消息。",
    "recv.identity_changed": "警告：与 {who}… 的安全码已变更。请重新核对，再信任这段对话。",
    "cmd.chat": "与 TO 交互式聊天：输入一行即发送；按 Ctrl-D 退出。",
    "chat.you": "我",
    "chat.header": "与 {who} 聊天：输入一行并按回车发送；按 Ctrl-D 退出",
    "chat.pending": "（待发送：连不上服务器；恢复连接后会自动发出）",
    "chat.not_sent": "（未发送：{reason}）",
    "chat.sent_from_outbox": "（已发出在发件箱中等待的 {id}）",
    "chat.outbox_failed": "（未发送：{id}：{reason}）",
    "cmd.safety": "显示与 TO 的安全码，以及可供扫描的二维码。",
    "safety.number": "与 {to} 的安全码：\n  {first}\n  {second}",
    "safety.verified": "已验证",
    "safety.not_verified": "未验证：请当面核对，然后运行 'veil verify {to}'",
    "cmd.verify": "把 TO 当前的身份密钥标记为已验证。",
    "opt.verify.number": "你核对过的安全码；如果密钥在此期间变更，则拒绝标记。",
    "verify.done": "{to} 已验证",
    "cmd.conversations": "列出对话，最近的在前。",
    "cmd.history": "显示与 TO 的对话。",
    "cmd.link": "把这台新设备关联到你的账户：显示一个代码，在你已在使用的设备上批准"
    "（'veil devices approve 代码'）。",
    "opt.link.server": "账户所在服务器的 URL（例如 http://127.0.0.1:8470）。",
    "opt.link.wait": "等待批准的秒数。",
    "link.show": "请在你账户的某台设备上运行：\n\n    veil devices approve {code}\n\n"
    "或扫描此二维码：",
    "link.waiting": "正在等待批准（按 Ctrl-C 放弃）……",
    "link.done": "已关联：这是 {who} 的第 {device} 台设备，主目录为 {home}",
    "cmd.devices": "本账户的设备：列出、批准新设备、移除设备。",
    "cmd.devices.list": "列出本账户的设备。",
    "cmd.devices.approve": "批准显示 CODE 的新设备（在其上运行 'veil link'）：它会收到你的"
    "身份、联系人和近期历史，全程端到端加密。",
    "opt.devices.name": "新设备的名称（只保存在你的设备上，不上传服务器）。",
    "opt.devices.history_days": "交给它的历史天数（0：不给）。",
    "cmd.devices.remove": "解除设备 DEVICE_ID 的关联：它的凭据立即失效。",
    "devices.line": "{id:>3}  {name} 关联于 {linked}  最后出现 {seen}",
    "devices.this_one": "（本设备）",
    "devices.never": "从未",
    "devices.approved": "已批准：设备 {id} 现已关联到本账户",
    "devices.removed": "已移除设备 {id}：它的凭据已失效",
    "cmd.group": "群组（MLS 端到端加密）：创建、添加、移除、退出、改名、管理员、成员、列表。"
    "GROUP 为 #名称 或群组 ID。",
    "cmd.group.create": "创建群组 NAME，你是管理员；--member 邀请成员（其所有设备）。",
    "opt.group.member": "邀请 WHO（@用户名、账户 ID 或联系链接）；可重复多次。",
    "opt.group.description": "群组简介（保存在加密内容中）。",
    "cmd.group.add": "把 WHO（一个或多个）加入 GROUP；仅限管理员。",
    "cmd.group.remove": "把 WHO 移出 GROUP：从这一刻起对方既不能阅读也不能发言；仅限管理员。",
    "cmd.group.leave": "退出 GROUP；本设备立即丢弃其密钥（历史记录保留）。",
    "cmd.group.rename": "把 GROUP 改名为 NAME（可加 --description）；仅限管理员。",
    "cmd.group.admin": "把 WHO 设为 GROUP 的管理员（--demote：取消）；仅限管理员。",
    "opt.group.demote": "改为取消其管理员身份。",
    "cmd.group.members": "列出 GROUP 的成员及其设备。",
    "cmd.group.list": "列出本设备所在或曾在的群组。",
    "group.line.one": "#{name}  （{id}…，{count} 名成员{role}{state}）",
    "group.line.other": "#{name}  （{id}…，{count} 名成员{role}{state}）",
    "group.you_admin": "，你是管理员",
    "group.inactive": "，你已不在其中",
    "group.created": "已创建 #{name}",
    "group.added": "已加入 #{name}",
    "group.removed": "已移出 #{name}",
    "group.left": "已退出 {name}",
    "group.renamed": "已改名为 #{name}",
    "group.promoted": "#{name}：已新增一名管理员",
    "group.demoted": "#{name}：已取消一名管理员",
    "group.member.one": "{who}  （{count} 台设备）{admin}",
    "group.member.other": "{who}  （{count} 台设备）{admin}",
    "group.admin_mark": "  管理员",
    "group.none": "本设备不在任何群组中",
    "group.missing.one": "{where}：来自 {who} 的 {count} 条消息未送达（服务器可能丢弃了它）",
    "group.missing.other": "{where}：来自 {who} 的 {count} 条消息未送达（服务器可能丢弃了它们）",
    "group.reordered": "{where}：来自 {who} 的一条消息顺序错乱，晚于其后发出的消息到达",
    "group.stalled.commit_withheld": "{where}：服务器称群组已进入新阶段，却扣留了带来这一变化的"
    "提交；在服务器提供它之前（或你被重新邀请之前），本设备无法在该群组中阅读或发送",
    "group.stalled.commit_refused": "{where}：服务器提供的群组变更无法通过验证；本设备保持原状，"
    "在真正的变更送达之前（或你被重新邀请之前）无法在该群组中阅读或发送",
    "group.stalled.capability_refused": "{where}：服务器拒绝了本设备访问该群组信箱的凭据（长时间"
    "离线后已过期，或被服务器更改）；如果持续如此，请让管理员重新邀请你",
    "send.group_sent": "已发送到 {to}（为所有成员只存储一份）",
    "relay.needs_directory": "--via mixnet 需要 --mix-directory FILE 和 --mix-authority HEX"
    "（或环境变量 VEIL_MIX_DIRECTORY 和 VEIL_MIX_AUTHORITY）",
    "relay.timeout": "超时：仍有数据包未发往混合网络",
    "cmd.server": "运行 Veil 服务器（数据用 SQLite 存放在 --data 下；无需安装其他软件）。",
    "opt.server.data": "数据目录（数据库、密钥、日志）。默认：./veil-data",
    "opt.server.host": "监听的地址。默认：127.0.0.1",
    "opt.server.port": "监听的端口。默认：8470",
    "opt.server.config": "覆盖内置默认值的 TOML 配置文件。",
    "cmd.server.invite": "生成一次性邀请码，供仅限邀请的注册使用。",
    "opt.invite.hours": "每个邀请码的有效时长（小时）。",
    "cmd.server.backup": "备份数据库（可在服务器运行时在线备份）和密钥文件。",
    "opt.backup.data": "服务器的数据目录（服务器可以正在运行）。",
    "opt.backup.out": "要写入的备份文件（不能已存在；以权限 0600 写入）。",
    "cmd.server.restore": "把备份恢复到新的（或空的）数据目录。",
    "opt.restore.from": "由 'veil server backup' 写出的文件。",
    "opt.restore.data": "要恢复到的数据目录（新的或空的）。",
    "restore.needs_data": "restore 需要 --data NEWDIR，即要恢复到的目录",
    "cmd.server.keys": "信任根（离线保存）及其认证的服务器签名密钥。",
    "cmd.keys.init_root": "创建信任根；显示客户端要固定的指纹（veil init --trust-root）。",
    "opt.init_root.out": "信任根私钥的写入位置（不要放在数据目录中）。",
    "cmd.keys.certify": "在数据目录中生成一个新的服务器签名密钥，并由信任根认证。",
    "opt.certify.root": "信任根的私钥（由 init-root 生成）。",
    "opt.keys.data": "服务器的数据目录。",
    "opt.certify.days": "服务器密钥证书的有效天数。",
    "opt.certify.key_id": "新服务器密钥的 ID（默认：当前密钥的 ID + 1）。",
    "opt.certify.revoke_older": "让客户端不再接受任何更早的服务器密钥（用于密钥泄露之后）。",
    "cmd.keys.move_root": "把信任根移出由早期版本写入的数据目录。",
    "opt.move_root.out": "信任根私钥的保存位置，须在数据目录之外。",
    "cmd.keys.show": "显示信任根指纹、服务器密钥 ID 及其到期时间，以及吊销下限。",
    "keys.cannot_read_root": "无法读取信任根 {path}：{reason}",
    "keys.not_a_root": "{path} 不是信任根密钥：{reason}",
    "keys.root_exists": "{path} 已存在；拒绝覆盖信任根",
    "keys.root_written": "信任根已写入 {path}（请离线保存）",
    "keys.fingerprint": "指纹 {fingerprint}",
    "keys.certified": "服务器密钥 {key_id} 已获认证，有效期 {days} 天，保存在 {path}{revoked}；"
    "重启服务器后生效",
    "keys.older_revoked": "；更早的密钥已吊销",
    "keys.target_exists": "{path} 已存在；拒绝覆盖",
    "keys.root_moved": "信任根已移至 {path}（请离线保存）；指纹 {fingerprint}",
    "keys.no_server_key": "{path} 中还没有服务器密钥",
    "keys.show": "指纹        {fingerprint}\n服务器密钥  {key_id}（{expires} 到期）"
    "\n已吊销      ID 小于 {floor} 的密钥",
    "cmd.mix": "匿名路由：Sphinx 混合节点、出口节点（provider）和已签名的目录。",
    "cmd.mix.keygen": "生成节点密钥（16 字节的 ID，以及按周期派生 Sphinx 密钥的种子）。",
    "opt.mix.keygen.out": "要写入的节点密钥文件（权限 600）。",
    "cmd.mix.descriptor": "写出节点的公开描述文件，交给目录权威机构。",
    "opt.mix.layer": "混合层（1..L）；出口节点为 0。",
    "opt.mix.address": "节点监听的 HOST:PORT。",
    "opt.mix.epochs": "从当前周期起，发布多少个周期的公钥。",
    "cmd.mix.directory": "生成权威机构密钥、签署目录、验证目录。",
    "cmd.mix.directory.keygen": "生成目录权威机构的 Ed25519 密钥；显示其公钥。",
    "opt.mix.authority_out": "权威机构密钥文件（权限 600）。",
    "cmd.mix.directory.sign": "签署一个列出 DESCRIPTORS 的目录（由 ``veil mix descriptor`` "
    "写出的文件）。",
    "cmd.mix.directory.verify": "检查目录的签名，并按层列出其中的节点。",
    "opt.mix.authority_public": "权威机构的公钥（十六进制）。",
    "opt.mix.idle_timeout": "连接多少秒内没有收到完整帧就关闭。",
    "opt.mix.authority": "目录权威机构的公钥（十六进制）。",
    "opt.mix.listen": "HOST:PORT；默认取目录中的地址。",
    "cmd.mix.node": "运行第 LAYER 层的混合节点，直到收到 SIGTERM。",
    "opt.mix.max_pending": "同时保留的数据包上限；超出后丢弃新的数据包。",
    "opt.mix.replay_capacity": "每个密钥周期保留的重放标记数；"
    "存满后节点拒收所有数据包（故障时保持关闭）。",
    "cmd.mix.provider": "运行出口节点（混合网络的出口），把消息 POST 到 SINK_URL。",
    "opt.mix.sink_url": "接收提交的 Veil 服务器地址。",
    "cmd.mix.send": "通过混合网络把 MESSAGE_FILE（``-`` 表示标准输入）发送到出口节点。",
    "opt.mix.rate": "每秒发送的数据包数。",
    "opt.mix.mean_delay": "每一跳的平均混合延迟（秒）。",
    "opt.mix.proxy": "socks5://[user:pass@]HOST:PORT（例如 Tor）。",
    "opt.mix.loop_fraction": "掩护流量中环回包所占的比例（一次性发送者在环回包返回之前就已离开，"
    "所以默认只用丢弃型掩护流量）。",
    "mix.layer_rule": "混合节点的层数须 >= 1，出口节点的层数为 0",
    "mix.not_a_descriptor": "{path} 不是节点描述文件",
    "mix.listed_as": "目录中登记的此节点是 {role}，层 {layer}",
    "mix.not_a_provider": "目录中没有把此节点登记为出口节点",
    "mix.timeout": "超时：仍有分片未发出",
    "cmd.demo": "Alice 和 Bob 通过一个在本进程内启动的临时 Veil 服务器对话。",
    "opt.demo.json": "改为输出一个 JSON 对象。",
    "demo.script.1": "嗨，Bob！你现在不在线；服务器会替你保管这个信封。",
    "demo.script.2": "它读不了内容，也不会记录是谁发的，不过它看到了我发这两条"
    "（首次联系时用我的凭据发送，直到 Bob 回复）。",
    "demo.script.3": "我上线了。两条都收到了，我用密封发送来回复。",
    "demo.script.4": "从第一条消息起就抗量子：PQXDH 加 ML-KEM-768。",
    "demo.title": "Veil 演示：一个临时服务器，Alice 和 Bob",
    "demo.who": "服务器 {server}  ·  alice {alice}  ·  bob {bob}",
    "demo.col_sender": "发送者",
    "demo.col_read": "收件人读到的内容",
    "demo.col_stored": "服务器此时存储的内容",
    "demo.stored_row": "→ {recipient} 设备 {device}：{size} 字节 {start}",
    "demo.nothing": "（无）",
    "demo.nothing_read": "（不在线：尚未读到任何内容）",
    "demo.sealed": "（密封发送）",
    "demo.columns": "服务器信封表的列：{columns}——没有一列记录发送者。",
    "demo.safety_number": "安全码（双方）：{number}",
    "demo.match": "一致",
    "demo.mismatch": "不一致",
}

CATALOGS: Final[dict[str, dict[str, str]]] = {"en": EN, "zh": ZH}

# Chinese sentences for the error codes of the lower layers (client, core, protocol,
# server, mixnet), whose messages stay English: veil.cli.i18n.explain shows the sentence
# and the English detail in parentheses. A class without an entry uses its parent's.
ERRORS_ZH: Final[dict[str, str]] = {
    # veil.core.errors
    "veil_error": "操作失败",
    "core_error": "加密协议或数据格式拒绝了输入",
    "malformed_message": "消息格式有误，无法解码",
    "unsupported_version": "此版本的 Veil 不支持该消息的版本",
    "invalid_signature": "签名验证失败",
    "untrusted_identity": "对方的身份密钥与此会话或联系人不符",
    "duplicate_message": "消息重复（重放或重复投递）",
    "decryption_failed": "解密失败：密文被篡改、不完整，或不是发给你的",
    "too_many_skipped": "消息序号跳得太远，超出了允许的范围",
    "unknown_prekey": "消息用到的预密钥不在本设备上（已用过或从未发布）",
    "expired_certificate": "证书不在有效期内",
    # veil.client.errors
    "client_error": "客户端操作失败",
    "store_error": "本地存储出错",
    "wrong_passphrase": "口令错误",
    "passphrase_required": "此存储受口令保护（请设置 VEIL_PASSPHRASE，或在提示时输入口令）",
    "corrupt_store": "本地存储已损坏或无法读取",
    "not_initialised": "主目录中还没有 Veil 身份；请先运行 'veil init'",
    "already_initialised": "主目录中已经有一个 Veil 身份",
    "server_unreachable": "连不上服务器",
    "sealed_refused": "服务器拒收了密封发送的消息；消息留在发件箱中，稍后会重新发送",
    "server_rejected": "服务器拒绝了请求",
    "unknown_user": "找不到该用户",
    "identity_changed": "联系人的身份密钥已变更：重新核对安全码之前不会再发送",
    "store_rolled_back": "本地存储被回滚到了更早的状态",
    "trust_root_mismatch": "服务器的信任根与你固定的不一致",
    "unapproved_device": "该设备未经账户身份批准（可能是服务器擅自添加的）；没有向它发送任何内容",
    "link_failed": "关联设备失败：代码有误或已过期，或服务器拒绝了关联",
    "link_code_mismatch": "新设备的密钥与关联代码不符：代码输错了，或有人（服务器？）替换了密钥",
    "unknown_group": "找不到该群组（本设备不在其中）",
    "not_group_member": "你（或对方）不是该群组的成员",
    "not_group_admin": "只有群组管理员才能添加、移除成员、改名或设置管理员",
    "group_busy": "群组一直在变化，提交未能完成；请重试",
    "group_stuck": "服务器不让本设备越过该群组的当前阶段（提交被扣留或无法验证）；消息留在发件箱中",
    # veil.protocol.errors
    "protocol_error": "无法解码协议数据",
    "malformed_json": "数据不是有效的 JSON",
    "invalid_fields": "数据字段不符合要求",
    # veil.server.errors (also the server's answers: ServerRejected.server_code)
    "server_error": "服务器出错",
    "config_error": "服务器配置有误",
    "storage_error": "服务器存储出错",
    "database_too_new": "数据库是由更新版本的 Veil 写入的",
    "data_directory_in_use": "另一个服务器进程正在使用此数据目录",
    "not_a_server_directory": "数据目录中没有服务器数据库",
    "backup_error": "无法完成备份或恢复",
    "invalid_backup": "这不是 Veil 服务器备份，或备份已损坏、格式未知",
    "restore_target_not_empty": "只能恢复到新的或空的数据目录",
    "bad_request": "请求有误",
    "invalid_json": "请求不是有效的 JSON",
    "validation_failed": "请求内容未通过校验",
    "payload_too_large": "数据太大",
    "unauthorized": "身份验证失败",
    "invalid_access_key": "访问密钥无效",
    "invalid_capability": "群组读写凭证缺失、格式有误或不匹配",
    "forbidden": "没有权限",
    "registration_closed": "此服务器不开放注册",
    "invalid_invite": "邀请码无效或已过期",
    "not_found": "找不到所请求的内容",
    "account_not_found": "找不到该账户",
    "device_not_found": "找不到该设备",
    "username_not_found": "找不到该用户名",
    "message_not_found": "找不到该消息",
    "group_not_found": "找不到该群组（或已过期）",
    "method_not_allowed": "不支持此请求方法",
    "conflict": "请求与现有数据冲突",
    "username_taken": "该用户名已被占用",
    "duplicate_prekey": "预密钥重复",
    "duplicate_key_package": "KeyPackage 已存在或重复上传",
    "mismatched_devices": "对方的设备列表已变化",
    "last_device": "不能移除账户的最后一台设备",
    "group_exists": "已有相同 ID 的群组",
    "epoch_conflict": "群组的纪元已变化（另一次提交抢先了）",
    "group_quota_exceeded": "群组信箱已满",
    "limit_exceeded": "超出了数量上限",
    "queue_full": "收件设备的队列已满",
    "too_many_connections": "服务器的连接数已达上限",
    "too_many_subscriptions": "此连接的群组订阅数已达上限",
    "provisioning_channel_not_found": "找不到该设备关联通道（从未打开、已过期或已读取）",
    "provisioning_message_exists": "该设备关联通道中已经有一条消息",
    "device_id_taken": "该账户已有使用此 ID 的设备",
    "invalid_approval": "设备批准无效（签名不符、针对的是另一台设备，或已过时）",
    # veil.mixnet.errors
    "mixnet_error": "混合网络出错",
    "mixnet_directory_error": "混合网络目录有误",
    "mixnet_fragment_error": "消息分片有误",
    "mixnet_queue_full": "混合网络队列已满",
    "mixnet_transport_error": "混合网络连接出错",
    "mixnet_socks_error": "SOCKS5 代理出错",
}

# English details that the Chinese sentence of their code already says in full.
SAID_ENOUGH_ZH: Final[frozenset[str]] = frozenset({
    "wrong passphrase",
    "this store is locked with a passphrase (set VEIL_PASSPHRASE or type it when asked)",
})

# What the server tells its operator (veil.server.lines.LINES: same keys, same fields).
SERVER_LINES_ZH: Final[dict[str, str]] = {
    "listening": "veil 服务器正在 {url} 上监听（数据在 {data}）",
    "trust_root": "信任根指纹 {fingerprint}（服务器密钥 {key_id}）",
    "connect": "客户端这样连接：veil init --server {url} --trust-root {fingerprint}",
    "throwaway_root": "已生成一次性信任根，且未保留其私钥：这个服务器密钥将无法轮换或吊销"
    "（长期部署请看 'veil server keys --help'）",
    "api_docs": "API 文档：{url}/docs",
    "backup_written": "备份已写入 {path}（{size}，权限 0600：其中有服务器的签名密钥，请妥善保管）",
    "backup_postgres": "存储为 PostgreSQL：此归档只包含密钥文件；请用 pg_dump --format=custom "
    "--file veil.dump {url} 备份数据库",
    "backup_sqlite": "数据库已在线复制（模式版本 {schema}），并包含 {files}",
    "backup_not_included": "未包含：信任根私钥（它不在数据目录中，请自行离线备份）、配置文件和日志",
    "backup_root_inside": "警告：{path} 是放在数据目录中的信任根私钥，它不在备份里："
    "请用 'veil server keys move-root' 把它移出",
    "restored": "已把 {files} 恢复到 {data}（{when} 的备份，Veil {version}）",
    "restore_postgres": "存储为 PostgreSQL：请用 pg_restore 从 pg_dump 恢复数据库，"
    "并在配置文件中设置 database_url",
    "restore_start": "这样启动服务器：veil server --data {data}",
}

__all__ = [
    "CATALOGS",
    "EN",
    "ERRORS_ZH",
    "SAID_ENOUGH_ZH",
    "SERVER_LINES_ZH",
    "ZH",
]
