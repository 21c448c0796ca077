"""The mesh CA in etcd: created once for every replica, rotated, old anchors retired.

Invariants:
- `ca/current` holds the one issuing CA (key sealed with the operator's
  passphrase); the first replica to need it creates it with a
  create-if-absent transaction and every other replica loads the winner's.
- `ca/bundle` lists every trusted anchor. A rotation makes a new CA current
  and keeps the old anchors, so leaves of either verify while workloads
  renew; `retire_ca` then drops an old anchor, never the current one.
- Every change is one transaction conditional on the revisions it read.
"""

from __future__ import annotations

import sys
import time

from control.store import EtcdStore, KeyLayout, TxnOp
from skein.errors import ConfigError, ConflictError, NotFoundError, SkeinError
from skein.logging import get_logger
from skein.pki import (
    CaRecord,
    CertificateAuthority,
    PkiError,
    decode_bundle,
    encode_bundle,
    fingerprint,
    with_anchor,
    without_anchor,
)

__all__ = ["NO_PASSPHRASE", "bootstrap_ca", "retire_ca", "rotate_ca", "run_ca_command"]

log = get_logger("control.ca")

NO_PASSPHRASE = (
    "certificate issuance is off on this control replica: it has no CA key passphrase; "
    "start control with --ca-key-passphrase-file FILE (or env SKEIN_CA_PASSPHRASE) to "
    "enable the mesh CA"
)
_ATTEMPTS = 3


async def bootstrap_ca(
    store: EtcdStore,
    layout: KeyLayout,
    candidate: CertificateAuthority,
    passphrase: bytes,
    now: float,
) -> CaRecord:
    """The stored CA record, storing `candidate` (and a bundle of it) first if there is none.

    Create-if-absent: when replicas race, one transaction wins and every
    replica returns the winner's record.
    """
    record = CaRecord.seal(candidate, passphrase, now)
    ops = [TxnOp(layout.ca_current, record.encode())]
    bundle = await store.get(layout.ca_bundle)
    if bundle is None:
        ops.append(TxnOp(layout.ca_bundle, encode_bundle([candidate.anchor])))
        expect = {layout.ca_current: 0, layout.ca_bundle: 0}
    else:  # a bundle without a current CA: keep it and add ours
        anchors = with_anchor(decode_bundle(bundle.value), candidate.anchor)
        ops.append(TxnOp(layout.ca_bundle, encode_bundle(anchors)))
        expect = {layout.ca_current: 0, layout.ca_bundle: bundle.mod_revision}
    won, _ = await store.txn(expect, ops)
    if won:
        log.info(
            "mesh CA stored",
            subject=candidate.certificate.subject.rfc4514_string(),
            fingerprint=fingerprint(candidate.anchor),
        )
        return record
    stored = await store.get(layout.ca_current)
    if stored is None:
        raise ConflictError("ca/current changed while it was being created; retry")
    return CaRecord.decode(stored.value)


async def rotate_ca(
    store: EtcdStore,
    layout: KeyLayout,
    new_ca: CertificateAuthority,
    passphrase: bytes,
    now: float,
) -> list[str]:
    """Make `new_ca` the issuing CA and trust it next to the old ones.

    The old anchors stay in the bundle so certificates they issued keep
    verifying until workloads renew; drop them afterwards with `retire_ca`.
    The current CA must open with `passphrase` (proof the caller holds it).
    Returns the bundle's fingerprints.
    """
    for _ in range(_ATTEMPTS):
        current = await store.get(layout.ca_current)
        bundle = await store.get(layout.ca_bundle)
        expect = {
            layout.ca_current: current.mod_revision if current else 0,
            layout.ca_bundle: bundle.mod_revision if bundle else 0,
        }
        anchors = decode_bundle(bundle.value) if bundle else []
        if current is not None:
            old = CaRecord.decode(current.value)
            old.open(passphrase)
            anchors = with_anchor(anchors, old.anchor())
        anchors = with_anchor(anchors, new_ca.anchor)
        record = CaRecord.seal(new_ca, passphrase, now)
        ops = [
            TxnOp(layout.ca_current, record.encode()),
            TxnOp(layout.ca_bundle, encode_bundle(anchors)),
        ]
        won, _ = await store.txn(expect, ops)
        if won:
            log.info("mesh CA rotated", fingerprint=fingerprint(new_ca.anchor))
            return [fingerprint(a) for a in anchors]
    raise ConflictError("the CA changed during each of 3 rotation attempts; retry")


async def retire_ca(store: EtcdStore, layout: KeyLayout, anchor_fingerprint: str) -> list[str]:
    """Stop trusting an old anchor (after a rotation, once every leaf it signed is renewed).

    Refuses to drop the current CA's anchor. Returns the bundle's fingerprints.
    """
    for _ in range(_ATTEMPTS):
        current = await store.get(layout.ca_current)
        bundle = await store.get(layout.ca_bundle)
        if bundle is None:
            raise NotFoundError("no trust bundle is stored (ca/bundle)")
        wanted = anchor_fingerprint.replace(":", "").lower()
        if current is not None and fingerprint(CaRecord.decode(current.value).anchor()) == wanted:
            raise ConfigError(
                "fingerprint", "is the current CA's anchor; rotate to a new CA before retiring it"
            )
        anchors = decode_bundle(bundle.value)
        kept = without_anchor(anchors, wanted)
        if len(kept) == len(anchors):
            raise NotFoundError(f"no anchor with fingerprint {wanted} in the trust bundle")
        expect = {
            layout.ca_current: current.mod_revision if current else 0,
            layout.ca_bundle: bundle.mod_revision,
        }
        won, _ = await store.txn(expect, [TxnOp(layout.ca_bundle, encode_bundle(kept))])
        if won:
            log.info("CA anchor retired", fingerprint=wanted)
            return [fingerprint(a) for a in kept]
    raise ConflictError("the trust bundle changed during each of 3 attempts; retry")


async def run_ca_command(
    store: EtcdStore,
    layout: KeyLayout,
    *,
    passphrase: bytes | None,
    trust_domain: str,
    operator_ca: CertificateAuthority | None,
    retire: str | None,
) -> int:
    """`skein control --rotate-ca` / `--retire-ca SHA256`: one change, printed; the exit code.

    Rotation makes `operator_ca` (or a freshly generated CA) the issuing CA
    and keeps trusting the old anchors; replicas pick it up at their next
    Sign. Run it once against the mesh, not on every replica.
    """
    try:
        if retire is not None:
            kept = await retire_ca(store, layout, retire)
        else:
            if passphrase is None:
                raise PkiError(NO_PASSPHRASE)
            new_ca = operator_ca or CertificateAuthority.generate(trust_domain, time.time())
            kept = await rotate_ca(store, layout, new_ca, passphrase, time.time())
            print(f"issuing CA is now {fingerprint(new_ca.anchor)}")
    except SkeinError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("trusted CA anchors (sha256):")
    for fp in kept:
        print(f"  {fp}")
    return 0
