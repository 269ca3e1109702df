"""Mutation run: does the fast test suite catch deliberate bugs?

Each mutation below is a small deliberate bug (one snippet of one module replaced). For each,
the script copies the repository's ``aiolmdb/`` package into a temporary directory, applies the
mutation there, and runs the fast tests (everything but ``tests/stress``) against that copy,
stopping at the first failure (``-x``). A mutation is

- ``caught`` when the suite fails (or times out: some mutations make operations hang),
- ``NOT CAUGHT`` when the suite passes: a promise no fast test holds,
- ``NOT APPLIED`` when its snippet is not found exactly once in its file: the list has fallen
  out of step with the code and must be updated.

The script exits with status 1 if any mutation is NOT CAUGHT or NOT APPLIED, or if the
unmutated copy fails the suite (then every mutation would look caught).

Usage (from anywhere; ``make`` has created .venv)::

    .venv/bin/python tools/mutate.py                 # every mutation, two at a time
    .venv/bin/python tools/mutate.py --check         # only check that every snippet applies
    .venv/bin/python tools/mutate.py close-no-abort pop-atomic   # some of them
    .venv/bin/python tools/mutate.py --list

Keep the list in step with the code: when a refactoring moves a snippet, re-target it; when a
feature adds a promise, add the mutation that breaks it (and the test that catches it).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "aiolmdb"


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One deliberate bug: ``original`` (exactly once in ``file``) becomes ``replacement``."""

    id: str
    file: str  # relative to the package directory
    original: str
    replacement: str
    promise: str  # what the bug breaks, in one line


MUTATIONS: list[Mutation] = [
    # ---- close
    Mutation(
        "close-no-abort",
        "_engine/engine.py",
        "self._writer.abort_sessions()",
        "None",
        "close() rolls back open interactive write transactions (instead of hanging on them)",
    ),
    Mutation(
        "close-no-snapshot-release",
        "_engine/engine.py",
        "snapshot.release()",
        "None",
        "close() ends open snapshots",
    ),
    Mutation(
        "close-no-flush",
        "_engine/writer.py",
        "self._flush_writes()\n        self._writes.put(_STOP)",
        "self._writes.put(_STOP)",
        "writes submitted before close() (same loop iteration) still run",
    ),
    Mutation(
        "commit-after-close-silent",
        "transaction.py",
        "elif command is COMMIT:",
        "elif False:",
        "commit() of a transaction that close() rolled back raises instead of returning",
    ),
    # ---- cancellation
    Mutation(
        "deliver-no-invalid-state-guard",
        "_engine/delivery.py",
        "except asyncio.InvalidStateError:",
        "except ZeroDivisionError:",
        "an operation cancelled while its batch runs does not strand the rest of the batch",
    ),
    Mutation(
        "write-cancelled-before-start-runs",
        "_engine/commit.py",
        "live = [req for req in batch if not req[0].cancelled()]",
        "live = list(batch)",
        "a write cancelled before its batch starts never runs",
    ),
    Mutation(
        "read-cancelled-before-start-runs",
        "_engine/readers.py",
        "if fut.cancelled():",
        "if False:",
        "a read cancelled before its batch starts never runs",
    ),
    # ---- batches
    Mutation(
        "commit-per-op",
        "_engine/commit.py",
        "ran = self._runner.run(self._replaying(live) if self._writemap else self._nested(live))",
        "raise RuntimeError('one transaction per operation')",
        "writes issued together share one transaction and one commit (group commit)",
    ),
    Mutation(
        "no-child-transaction",
        "_engine/commit.py",
        "for fut, fn, args, atomic in live:\n                if atomic:",
        "for fut, fn, args, atomic in live:\n                if True:",
        "a failing operation of a batch rolls back alone (batch isolation)",
    ),
    Mutation(
        "pop-atomic",
        "_store/ops.py",
        "{put, put_bytes, put_if, put_stored, delete, delete_if, update, drop}",
        "{put, put_bytes, put_if, put_stored, delete, delete_if, update, drop, pop}",
        "a pop that fails (decoding the old value) rolls back: the key keeps its value",
    ),
    Mutation(
        "replace-atomic",
        "_store/ops.py",
        "{put, put_bytes, put_if, put_stored, delete, delete_if, update, drop}",
        "{put, put_bytes, put_if, put_stored, delete, delete_if, update, drop, replace}",
        "a replace that fails (decoding the old value) rolls back: the key keeps its value",
    ),
    Mutation(
        "put-multi-atomic",
        "_store/ops.py",
        "{put, put_bytes, put_if, put_stored, delete, delete_if, update, drop}",
        "{put, put_bytes, put_if, put_stored, delete, delete_if, update, drop, put_multi}",
        "put_multi is all or nothing: a bad pair leaves none of the others stored",
    ),
    Mutation(
        "delete-multi-atomic",
        "_store/ops.py",
        "{put, put_bytes, put_if, put_stored, delete, delete_if, update, drop}",
        "{put, put_bytes, put_if, put_stored, delete, delete_if, update, drop, delete_multi}",
        "delete_multi is all or nothing: a refused key leaves every key in place",
    ),
    Mutation(
        "get-multi-same-encoding-unchecked",
        "_store/ops.py",
        '_check_same_encoding(kc, out, key, encoded, "get_multi")',
        "None",
        "get_multi refuses keys equal in Python but encoded differently (ValueError)",
    ),
    Mutation(
        "delete-multi-same-encoding-unchecked",
        "_store/ops.py",
        '_check_same_encoding(kc, out, key, encoded, "delete_multi")',
        "None",
        "delete_multi refuses keys equal in Python but encoded differently (ValueError)",
    ),
    # ---- reads
    Mutation(
        "inline-snapshot-outlives-iteration",
        "_engine/readers.py",
        "loop.call_soon(self.release_inline)",
        "loop.call_later(0.05, self.release_inline)",
        "read-your-writes with inline reads: a write's caller then reads its own write",
    ),
    Mutation(
        "range-stop-inclusive",
        "_store/scan.py",
        "return entries[: bisect_left(entries, hi, key=key)], True",
        "return entries[: bisect_left(entries, hi, key=key) + 1], True",
        "range iteration stops before `stop` (half-open [start, stop))",
    ),
    Mutation(
        "range-reverse-start-exclusive-off-by-one",
        "_store/scan.py",
        "return entries[:idx], True",
        "return entries[: idx + 1], True",
        "reverse range iteration ends at `start` (keys below it never come)",
    ),
    # ---- map growth
    Mutation(
        "map-growth-off",
        "_engine/txnrunner.py",
        "if not self._map_growth:\n            return False",
        "if True:\n            return False",
        "a full map grows and the batch runs again (map_growth=True)",
    ),
    Mutation(
        "tuple-prefix-plain-bytes",
        "_codecs/tuples.py",
        'return encoded + b"\\xff"',
        "return super().prefix_end(encoded)",
        "a tuple prefix selects element prefixes, not keys continuing an escaped 0x00",
    ),
    Mutation(
        "value-error-unnamed",
        "_store/ops.py",
        'return ValueError(f"the value stored under key {key!r} cannot be decoded: {exc}")',
        "return exc",
        "a stored value that would not decode is named by its key",
    ),
    Mutation(
        "version-from-clock-only",
        "_store/versions.py",
        "    if version <= last:\n        version = last + 1",
        "    if False:\n        version = last + 1",
        "a new version is above every version stored before (not just the clock's time)",
    ),
    Mutation(
        "if-version-ignored",
        "_store/ops.py",
        "if if_version is not None and actual != if_version:",
        "if False:",
        "put/delete with if_version write only while the entry still has that version",
    ),
    Mutation(
        "map-full-unexplained",
        "_engine/txnrunner.py",
        'err = lmdb.MapFullError(f"{advice} (LMDB: {exc})")',
        "err = lmdb.MapFullError(str(exc))",
        "a write refused at max_map_size says which setting stopped the growth",
    ),
    # ---- options
    Mutation(
        "db-name-nul-accepted",
        "_store/catalogue.py",
        'if b"\\0" in encoded:',
        "if False:",
        "open_db refuses a name with a NUL byte (LMDB would open the name cut at the NUL)",
    ),
    Mutation(
        "range-unknown-option-ignored",
        "ranges.py",
        "    if unknown:\n",
        "    if False:\n",
        "items/keys/values refuse a misspelt option instead of scanning everything",
    ),
    Mutation(
        "truthy-flag-accepted",
        "_engine/config.py",
        "if not (isinstance(value, bool) or (type(value) is int and value in (0, 1))):",
        "if False:",
        'yes/no options refuse values that are merely truthy ("no", 2, None)',
    ),
    Mutation(
        "max-batch-unvalidated",
        "_engine/config.py",
        '_check_int("max_batch", self.max_batch, 1)',
        "pass",
        "open() refuses max_batch < 1 (it would hang every read)",
    ),
    # ---- change feed
    Mutation(
        "feed-no-cross-process-poll",
        "_store/feed.py",
        "done, _ = await asyncio.wait((waiter,), timeout=POLL_INTERVAL)",
        "done, _ = await asyncio.wait((waiter,), timeout=None)",
        "a caught-up follower sees other processes' commits (it polls LMDB's last_txnid)",
    ),
    Mutation(
        "feed-since-beyond-end-accepted",
        "_store/feed.py",
        "if after is not None and after > last:",
        "if False:",
        "changes(since=N) beyond the log's end is refused, not followed from a gap",
    ),
    Mutation(
        "log-record-key-length-unchecked",
        "_store/records.py",
        "if key_len == 0 or end > size:",
        "if False:",
        "a log record whose key is cut short raises naming its sequence, not a wrong Change",
    ),
    # ---- change log: records, recorder, trimming, dump/load
    # (Not listed: dropping Retention.of's `value < 0` check is equivalent, since
    # Retention(entries=-1) refuses the value with the same message.)
    Mutation(
        "log-record-short-header-unchecked",
        "_store/records.py",
        "if size < HEAD.size:",
        "if False:",
        "a log record shorter than its header raises ChangeRecordError, not struct.error",
    ),
    Mutation(
        "log-record-unknown-kind-read-as-put",
        "_store/records.py",
        "found = KIND_NAMES.get(code)\n    else:",
        'found = KIND_NAMES.get(code, ("put", True))\n    else:',
        "a log record of an unknown kind is refused, not read as a put",
    ),
    Mutation(
        "log-record-name-length-unchecked",
        "_store/records.py",
        "if name_len == 0 or at + name_len > size:",
        "if name_len == 0:",
        "a log record whose name runs past its end is refused, not cut short",
    ),
    Mutation(
        "log-record-trailing-bytes-accepted",
        "_store/records.py",
        "if not has_value and end != size:",
        "if False:",
        "a keys-only log record (put/delete) with bytes after its key is refused",
    ),
    Mutation(
        "log-damaged-record-hides-earlier",
        "_store/records.py",
        "if out:\n                    return out, trimmed, False",
        "if False:\n                    return out, trimmed, False",
        "the changes before a damaged log record are delivered before it raises",
    ),
    Mutation(
        "log-record-offset-unchecked",
        "_store/records.py",
        "if offset >= seq:",
        "if False:",
        "a record whose commit offset goes before the log's start raises, naming its sequence",
    ),
    Mutation(
        "log-record-no-commit-offset",
        "_store/recorder.py",
        "txn_log.ts, seq - txn_log.first, named[2])",
        "txn_log.ts, 0, named[2])",
        "every record says which commit it belongs to (a group commit is one commit)",
    ),
    Mutation(
        "log-record-no-flags",
        "_store/recorder.py",
        "txn_log.ts, seq - txn_log.first, named[2])",
        "txn_log.ts, seq - txn_log.first, 0)",
        "every record carries its database's flags (dupsort, versioned, ...)",
    ),
    Mutation(
        "log-delete-db-recorded-as-drop",
        "_store/recorder.py",
        "DELETE_DB if delete and named is not None and named[0] else DROP",
        "DROP",
        "deleting a database is recorded as delete_db, emptying one as drop",
    ),
    Mutation(
        "log-seq-ignores-trimmed-mark",
        "_store/records.py",
        "return max(last, trimmed_upto(txn, meta))",
        "return last",
        "sequence numbers keep growing after retention trimmed the whole log",
    ),
    Mutation(
        "log-seq-reused",
        "_store/recorder.py",
        "return last_seq(txn, handles.log, handles.meta) + 1",
        "return last_seq(txn, handles.log, handles.meta)",
        "a write transaction's first change gets the number after the log's last",
    ),
    Mutation(
        "log-keys-mode-stores-values",
        "_store/recorder.py",
        "if recorder.values and kind in (PUT, DELETE_VALUE):",
        "if kind in (PUT, DELETE_VALUE):",
        'changelog="keys" records keys only (no values in the log)',
    ),
    Mutation(
        "log-child-abort-keeps-records",
        "_store/recorder.py",
        "txn_log.seq, size = self._mark\n        del txn_log.records[size:]",
        "txn_log.seq, size = self._mark",
        "an operation rolled back alone (failed in a batch) is not passed to on_commit hooks",
    ),
    Mutation(
        "log-child-abort-keeps-seq",
        "_store/recorder.py",
        "txn_log.seq, size = self._mark",
        "size = self._mark[1]",
        "an operation rolled back alone leaves no gap in the log's sequence numbers",
    ),
    Mutation(
        "trim-no-high-water-mark",
        "_store/trim.py",
        "txn.put(TRIMMED_KEY, top, db=meta)",
        "pass",
        "trimming stores the highest number trimmed (followers behind it get ChangesTrimmedError)",
    ),
    Mutation(
        "trim-keeps-one-too-few",
        "_store/trim.py",
        "if len(doomed) < excess or",
        "if len(doomed) <= excess or",
        "retention by entries keeps exactly that many changes",
    ),
    Mutation(
        "feed-trimmed-gap-silent",
        "_store/feed.py",
        "raise _trimmed(after, trimmed)\n        return self._decode(",
        "pass\n        return self._decode(",
        "a follower behind the trimmed part of the log gets ChangesTrimmedError, not silence",
    ),
    Mutation(
        "commits-trimmed-gap-silent",
        "_store/feed.py",
        "raise _trimmed(after, trimmed)\n        pending = self._pending",
        "pass\n        pending = self._pending",
        "a commit follower behind the trimmed part of the log gets ChangesTrimmedError",
    ),
    Mutation(
        "commits-partial-unflagged",
        "_store/feed.py",
        "return group(records, head.first is not None and head.first != head.change.seq)",
        "return group(records, False)",
        "a commit whose first records were trimmed (or skipped by since=) is marked partial",
    ),
    Mutation(
        "commits-split-at-chunk-end",
        "_store/feed.py",
        "if at_end and pending:",
        "if pending:",
        "a commit larger than one read of the log is yielded whole, not in pieces",
    ),
    Mutation(
        "commits-misplaced-record-accepted",
        "_store/feed.py",
        "and self._read_any\n",
        "and False\n",
        "a record outside its commit (its offset names an earlier commit) raises ChangeRecordError",
    ),
    Mutation(
        "changes-missing-database-accepted",
        "_store/feed.py",
        "if not is_database(txn, key):",
        "if False:",
        "changes(db=name) of a database that does not exist raises, naming it",
    ),
    Mutation(
        "feed-log-id-unchecked",
        "_store/feed.py",
        "if expected is not None and found != expected:",
        "if False:",
        "changes(since=N, log_id=X) of another log is refused (ChangesPositionError)",
    ),
    Mutation(
        "load-log-identity-dropped",
        "_store/dumplog.py",
        "if identity is not None:\n        txn.put(LOG_ID_KEY, identity, db=meta)",
        "if False:\n        txn.put(LOG_ID_KEY, identity, db=meta)",
        "aiolmdb load keeps the dumped change log's identity (followers see the same log)",
    ),
    Mutation(
        "load-log-record-unchecked",
        "_store/dumplog.py",
        "decode_record(SEQ.unpack(key)[0], value)",
        "pass",
        "aiolmdb load refuses a damaged change log record, naming its sequence number",
    ),
    Mutation(
        "load-log-trimmed-mark-dropped",
        "_store/dumplog.py",
        "if trimmed > trimmed_upto(txn, meta):",
        "if False:",
        "aiolmdb load restores the trimmed high-water mark (numbers keep growing)",
    ),
    # ---- versions
    Mutation(
        "version-counter-not-stored",
        "_store/versions.py",
        "txn.put(COUNTER_KEY, _U64.pack(version), True, True, False, meta)",
        "None",
        "a drawn version is stored as the counter (the next one is above it)",
    ),
    Mutation(
        "version-counter-lowered",
        "_store/versions.py",
        "if raw is None or _U64.unpack(raw)[0] < version:",
        "if True:",
        "raising the version counter (restore_entries, load) never lowers it",
    ),
    Mutation(
        "version-restore-ignores-clock",
        "_store/versions.py",
        "raise_counter(txn, meta, max(dumped, clock() // 1000))",
        "raise_counter(txn, meta, dumped)",
        "aiolmdb load raises the version counter to the clock too, not just the dump's",
    ),
    Mutation(
        "version-draw-kept-after-restore",
        "_store/versions.py",
        "self._txn = None",
        "pass",
        "a write after restore_entries in the same transaction gets a version above them",
    ),
    Mutation(
        "if-version-zero-accepted",
        "_store/versions.py",
        "if not 0 < version <= MAX_VERSION:",
        "if not 0 <= version <= MAX_VERSION:",
        "if_version=0 is refused (no entry ever has version 0)",
    ),
    Mutation(
        "versioned-short-value-unchecked",
        "_store/versions.py",
        "        if len(buffer) < PREFIX_SIZE:\n            raise ValueError(\n"
        '                f"not a versioned value',
        '        if False:\n            raise ValueError(\n                f"not a versioned value',
        "a versioned database's value shorter than its version is refused, not read as empty",
    ),
    Mutation(
        "versioned-large-value-keeps-version",
        "_store/versions.py",
        "copy_out(memoryview(buffer)[PREFIX_SIZE:])",
        "copy_out(memoryview(buffer))",
        "a large value of a versioned database is read without its version prefix",
    ),
    Mutation(
        "dump-no-version-counter",
        "_cli/commands.py",
        "counter_line = {LAST_VERSION_KEY: str(counter)} if counter else {}",
        "counter_line = {}",
        "aiolmdb dump writes the version counter (a deleted entry's version is never reissued)",
    ),
    Mutation(
        "load-version-counter-zero-accepted",
        "_cli/commands.py",
        "or not 0 < int(text) <= MAX_VERSION:",
        "or not 0 <= int(text) <= MAX_VERSION:",
        "aiolmdb load refuses a version counter header of 0",
    ),
    # ---- large values
    Mutation(
        "large-marker-not-written",
        "_store/catalogue.py",
        'getattr(txn, "raw", txn).put(key, LARGE_MARK, db=meta)',
        "None",
        "a large write stores the database's large-values marker (a fresh process knows it)",
    ),
    Mutation(
        "large-marker-ignored-at-open",
        "_store/catalogue.py",
        "        if large:\n            self.large.found_stored()",
        "        if False:\n            self.large.found_stored()",
        "a database opened with its large-values marker copies large values from its first read",
    ),
    Mutation(
        "large-marker-kept-after-delete",
        "_store/catalogue.py",
        'getattr(txn, "raw", txn).delete(large_key(entry.name), db=self._handles.meta)',
        "None",
        "a database deleted and made again under its name starts without the large marker",
    ),
    Mutation(
        "copy-out-prefix-lost",
        "_codecs/copyout.py",
        "_memmove(address, prefix, skip)",
        "None",
        "copy_out puts the prefix (a versioned value's version) before a large copy",
    ),
    Mutation(
        "value-stream-keeps-version",
        "_store/large.py",
        "self._skip = _versions.PREFIX_SIZE if ctx.versioned else 0",
        "self._skip = 0",
        "get_chunks of a versioned database streams the value without its version",
    ),
    # ---- codecs
    Mutation(
        "compress-threshold-off-by-one",
        "_codecs/coder.py",
        "if size >= self._threshold:",
        "if size > self._threshold:",
        "a value exactly `threshold` bytes long is compressed",
    ),
    Mutation(
        "compress-keeps-larger-output",
        "_codecs/coder.py",
        "if len(packed) <= size:",
        "if True:",
        "a value compression would make larger is stored uncompressed (0x00)",
    ),
    Mutation(
        "max-size-zero-accepted",
        "_codecs/compress.py",
        "if value < 1:",
        "if value < 0:",
        "compressed(max_size=0) is refused",
    ),
    Mutation(
        "zstd-claimed-size-unchecked",
        "_codecs/compress.py",
        "if max_size is not None and claimed is not None and claimed > max_size:\n"
        '            raise _TooLarge("zstd"',
        'if False:\n            raise _TooLarge("zstd"',
        "a zstd frame whose header claims more than max_size is refused before decompressing",
    ),
    Mutation(
        "lz4-claimed-size-unchecked",
        "_codecs/compress.py",
        "if max_size is not None and claimed is not None and claimed > max_size:\n"
        '            raise _TooLarge("LZ4"',
        'if False:\n            raise _TooLarge("LZ4"',
        "an LZ4 frame whose header claims more than max_size is refused before decompressing",
    ),
    Mutation(
        "zlib-bound-unchecked",
        "_codecs/compress.py",
        '    if total > max_size:\n        raise _TooLarge("zlib", max_size, None)',
        '    if False:\n        raise _TooLarge("zlib", max_size, None)',
        "a zlib value decompressing past max_size says so (not a truncated-stream error)",
    ),
    Mutation(
        "stream-bound-unchecked",
        "_codecs/compress.py",
        "    if max_size is not None and total > max_size:\n        raise _TooLarge(codec",
        "    if False:\n        raise _TooLarge(codec",
        "a zstd/LZ4 value decompressing past max_size says so (a frame without its size)",
    ),
    Mutation(
        "frame-trailing-bytes-accepted",
        "_codecs/compress.py",
        "if stream.unused_data:",
        "if False:",
        "a zstd/LZ4 value with bytes after its frame is refused",
    ),
    Mutation(
        "zstd-dict-id-unchecked",
        "_codecs/compress.py",
        "if zstd_dict.dict_id != wanted:",
        "if False:",
        "a zstd value made with another dictionary is refused naming both ids",
    ),
    Mutation(
        "tuple-int-below-big-inclusive",
        "_codecs/tuples.py",
        "        if v < _BIG:\n",
        "        if v <= _BIG:\n",
        "2**64-1 takes the long int form (the short form of it is not canonical)",
    ),
    Mutation(
        "tuple-negative-int-off-by-one",
        "_codecs/tuples.py",
        'return _NEG[n] + (v + (1 << (n << 3)) - 1).to_bytes(n, "big")',
        'return _NEG[n] + (v + (1 << (n << 3))).to_bytes(n, "big")',
        "negative ints are stored in ones' complement (round trip and order)",
    ),
    Mutation(
        "tuple-nested-none-unescaped",
        "_codecs/tuples.py",
        'append(b"\\x00\\xff" if nested else b"\\x00")',
        'append(b"\\x00")',
        "None inside a nested tuple is escaped (else it ends the nested tuple)",
    ),
    Mutation(
        "tuple-noncanonical-int-accepted",
        "_codecs/tuples.py",
        "if n and (data[pos + 1] == 0 or value == _BIG):",
        "if False:",
        "a positive int not in its shortest form is refused (one key, one encoding)",
    ),
    Mutation(
        "string-coder-bytes-codec-accepted",
        "_codecs/builtin.py",
        '            "".encode(name)\n            b"".decode(name)\n',
        "",
        'StringCoder refuses a bytes-to-bytes codec ("base64") at construction',
    ),
    Mutation(
        "uint-bool-accepted",
        "_codecs/builtin.py",
        "        elif isinstance(obj, bool):\n            raise TypeError(",
        "        elif False:\n            raise TypeError(",
        "UInt coders refuse a bool key (TypeError)",
    ),
    Mutation(
        "pickle-protocol-minus-one-unmapped",
        "_codecs/builtin.py",
        "        if protocol == -1:\n            protocol = pickle.HIGHEST_PROTOCOL\n",
        "",
        "PickleCoder(protocol=-1) means the highest protocol",
    ),
    Mutation(
        "msgspec-type-error-as-value-error",
        "_codecs/typed.py",
        "cls = TypeError if isinstance(exc, TypeError) else ValueError",
        "cls = ValueError",
        "a value msgspec cannot encode by its type raises TypeError, not ValueError",
    ),
]


@dataclasses.dataclass
class Outcome:
    """What became of one mutation."""

    mutation: Mutation
    status: str  # "caught", "NOT CAUGHT", "NOT APPLIED"
    detail: str
    seconds: float = 0.0


def apply(mutation: Mutation, package: Path) -> str | None:
    """Apply ``mutation`` to the package copy in ``package``; the reason if it cannot be."""
    path = package / mutation.file
    if not path.is_file():
        return f"no file {PACKAGE}/{mutation.file}"
    text = path.read_text(encoding="utf-8")
    count = text.count(mutation.original)
    if count != 1:
        where = "not found" if count == 0 else f"found {count} times (must be unique)"
        return f"snippet {mutation.original!r} {where} in {PACKAGE}/{mutation.file}"
    path.write_text(text.replace(mutation.original, mutation.replacement), encoding="utf-8")
    return None


def check_all(mutations: list[Mutation]) -> dict[str, str]:
    """Apply every mutation to a scratch copy: id -> reason, for those that do not apply."""
    problems: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="aiolmdb-mutate-") as scratch:
        for m in mutations:
            copy = Path(scratch) / m.id / PACKAGE
            shutil.copytree(ROOT / PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
            reason = apply(m, copy)
            if reason is not None:
                problems[m.id] = reason
    return problems


def pytest_command(workdir: Path, pytest_args: list[str]) -> list[str]:
    """The fast suite, against whatever ``aiolmdb`` the working directory holds."""
    return [
        sys.executable,
        "-m",
        "pytest",
        *pytest_args,
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        # pyproject puts the repository first on sys.path (for `benchmarks`): the copy goes
        # before it, so that `aiolmdb` is the mutated one.
        "-o",
        f"pythonpath={workdir} {ROOT}",
        "--rootdir",
        str(ROOT),
        "-c",
        str(ROOT / "pyproject.toml"),
    ]


def run_suite(workdir: Path, pytest_args: list[str], timeout: float) -> tuple[bool, str]:
    """Run the suite with ``workdir`` (holding the package copy) first on the path.

    ``python -m`` puts the working directory first on sys.path, and PYTHONPATH carries the
    copy to subprocesses the tests start. Returns (passed, a short account)."""
    env = {**os.environ, "PYTHONPATH": str(workdir), "AIOLMDB_MUTANT_DIR": str(workdir)}
    env.pop("PYTEST_ADDOPTS", None)
    probe = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    imported = probe.stdout.strip()
    if not imported.startswith(str(workdir)):
        raise RuntimeError(f"the copy is not what gets imported: {imported or probe.stderr}")
    proc = subprocess.Popen(
        pytest_command(workdir, pytest_args),
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so that a timeout can end the run with its children
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return False, f"the suite did not finish within {timeout:.0f} s (a hang)"
    if proc.returncode == 0:
        return True, last_line(out)
    if proc.returncode != 1:  # 1: tests failed; others: interrupted, usage error, no tests
        raise RuntimeError(f"pytest exited with {proc.returncode}: {last_line(out)}")
    failed = [  # the short summary's lines (not log lines that start with ERROR)
        line
        for line in out.splitlines()
        if line.startswith(("FAILED ", "ERROR ")) and "::" in line.split()[1]
    ]
    detail = failed[0] if failed else last_line(out)
    return False, detail.replace(os.path.relpath(ROOT, workdir) + os.sep, "")[:300]


def last_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def run_one(mutation: Mutation | None, pytest_args: list[str], timeout: float) -> Outcome | None:
    """Apply one mutation (None: the unmutated baseline) to a fresh copy and run the suite."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aiolmdb-mutate-") as workdir:
        copy = Path(workdir) / PACKAGE
        shutil.copytree(ROOT / PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
        if mutation is not None:
            reason = apply(mutation, copy)
            if reason is not None:
                return Outcome(mutation, "NOT APPLIED", reason)
        passed, detail = run_suite(Path(workdir), pytest_args, timeout)
    seconds = time.monotonic() - started
    if mutation is None:
        if passed:
            return None
        raise SystemExit(f"the unmutated package fails the suite: {detail}")
    return Outcome(mutation, "NOT CAUGHT" if passed else "caught", detail, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--check", action="store_true", help="only check that each applies")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="suites at once (default 2)")
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds per suite run (default 600)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument(
        "--pytest-args",
        default=f"{ROOT / 'tests'} --ignore={ROOT / 'tests' / 'stress'}",
        help="what pytest runs (default: the fast suite)",
    )
    args = parser.parse_args(argv)

    by_id = {m.id: m for m in MUTATIONS}
    if len(by_id) != len(MUTATIONS):
        raise SystemExit("duplicate mutation ids")
    unknown = [i for i in args.ids if i not in by_id]
    if unknown:
        raise SystemExit(f"unknown mutation(s): {', '.join(unknown)}; see --list")
    chosen = [by_id[i] for i in args.ids] if args.ids else list(MUTATIONS)
    if args.list:
        for m in chosen:
            print(f"{m.id:42} {m.file:15} {m.promise}")
        return 0

    problems = check_all(chosen)
    for mid, reason in problems.items():
        print(f"NOT APPLIED  {mid}: {reason}", flush=True)
    if args.check:
        print(f"{len(chosen) - len(problems)} of {len(chosen)} mutations apply")
        return 1 if problems else 0

    pytest_args = shlex.split(args.pytest_args)
    if not args.no_baseline:
        print("baseline: the unmutated package ...", flush=True)
        run_one(None, pytest_args, args.timeout)
        print("baseline: passes", flush=True)

    todo = [m for m in chosen if m.id not in problems]
    outcomes: list[Outcome] = [Outcome(by_id[i], "NOT APPLIED", r) for i, r in problems.items()]
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(run_one, m, pytest_args, args.timeout) for m in todo]
        for fut in concurrent.futures.as_completed(futures):
            outcome = fut.result()
            assert outcome is not None
            outcomes.append(outcome)
            print(
                f"{outcome.status:12} {outcome.mutation.id} ({outcome.seconds:.0f} s): "
                f"{outcome.detail}",
                flush=True,
            )

    order = {m.id: n for n, m in enumerate(chosen)}
    outcomes.sort(key=lambda o: order[o.mutation.id])
    print("\nsummary")
    for o in outcomes:
        print(f"  {o.status:12} {o.mutation.id:42} {o.mutation.promise}")
    bad = [o for o in outcomes if o.status != "caught"]
    print(f"{len(outcomes) - len(bad)} of {len(outcomes)} mutations caught")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
