"""Phone numbers and SIP URIs as typed in a file, to the addresses the dialer calls.

``normalize`` gives E.164 for a dialable number (``phonenumbers`` decides, with the
campaign's region as the default) or a SIP URI with its scheme in lower case, else the
reason it cannot be dialed. NANP numbers typed the usual ways take a fast path that
reaches phonenumbers' own verdict without its parser (a million-row import spends most of
its time here).
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, ValidationResult
from phonenumbers.phonemetadata import PhoneMetadata

MAX_ADDRESS = 255  # contact.e164 / suppression.e164 are String(255)

# sip:user@host[:port] (and sips:). The user part excludes ':' so a password form
# (user:secret@host) is refused rather than dialed with a secret in it, and control
# characters (a NUL cannot be stored in PostgreSQL text, nor sent in a SIP header).
_SIP = re.compile(
    r"(sips?):([^\s@:\x00-\x1f\x7f]+)@([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(\d{1,5}))?",
    re.IGNORECASE,
)
_TEL = re.compile(r"tel:", re.IGNORECASE)

# The fast path: NANP numbers typed the usual ways ("+1 919 555 1212", "(919) 555-1212",
# "1-919-555-1212"). Only the spelling is decided here; validity is still phonenumbers'
# verdict on the same PhoneNumber that ``parse`` would build. Anything else, and every
# number the fast path finds invalid, goes through ``parse`` so the answer and the reason
# are the slow path's own (tests/importing/test_importing.py compares the two on many numbers).
_FAST_PUNCTUATION = str.maketrans("", "", " ()-.")
_NANP_SPELLING = re.compile(r"(\+1|1)?([2-9]\d{9})")
# Plain national spellings are only fast for regions whose national prefix is the bare
# "1" with no transform rule, so ``parse`` provably reads the same digits.
_NANP_FAST_REGIONS = frozenset(
    r
    for r in ("US", "CA")
    if (m := PhoneMetadata.metadata_for_region(r)) is not None
    and m.national_prefix_for_parsing == "1"
    and m.national_prefix_transform_rule is None
)
# ``is_valid_number`` on a +1 number finds its region by trying the NANP regions in order,
# US first; US has no leading-digits pattern, so a number that is valid for US is exactly
# one it would call valid. Checking US directly skips the search for the common case.
_US_SHORTCUT = (
    phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(1, ("",))[0] == "US"
    and (us := PhoneMetadata.metadata_for_region("US")) is not None
    and us.leading_digits is None
)


def _valid_nanp(national: int) -> bool:
    number = PhoneNumber(country_code=1, national_number=national)
    if _US_SHORTCUT and phonenumbers.is_valid_number_for_region(number, "US"):
        return True
    return phonenumbers.is_valid_number(number)


# phonenumbers' verdict on a ten-digit NANP number is decided by its first few digits
# whenever every pattern it checks is "a prefix, then \d{k}": a full match of such a
# pattern on ten digits leaves the prefix exactly the first 10 - k of them, and the
# regions' leading-digits patterns (matched at the start) are short fixed strings. So
# the verdict is cached by that prefix, one byte per prefix (0: not yet asked, 1: valid,
# 2: not): a million numbers cost a few thousand calls of phonenumbers instead of a
# million, which was most of an import's time. _decisive_prefix proves the shape from
# the metadata this process loaded, and gives None (no cache) if any pattern differs.
_DESCS = (
    "general_desc", "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost",
    "personal_number", "voip", "pager", "uan", "voicemail", "no_international_dialling",
)  # fmt: skip


def _alternatives(pattern: str) -> list[str]:
    """A regex's top-level alternatives (split at ``|`` outside groups and classes)."""
    out, current, depth, in_class, i = [], "", 0, False, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            current += pattern[i : i + 2]
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            out.append(current)
            current, i = "", i + 1
            continue
        current += c
        i += 1
    out.append(current)
    return out


_TAIL = re.compile(r"\\d\{(\d+)\}")
_ATOM = re.compile(r"\[[^\]]*\]|\\d|\d")


def _decisive_prefix() -> int | None:
    longest = 0
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(1, ()):
        meta = PhoneMetadata.metadata_for_region(region)
        if meta is None:
            return None
        if meta.leading_digits:
            for alt in _alternatives(meta.leading_digits):
                if _ATOM.sub("", alt):  # anything but digits and classes: not a fixed string
                    return None
                longest = max(longest, len(_ATOM.findall(alt)))
        for name in _DESCS:
            desc = getattr(meta, name, None)
            pattern = desc.national_number_pattern if desc is not None else None
            if not pattern:
                continue
            for alt in _alternatives(pattern):
                tail = _TAIL.search(alt)
                if tail is None or tail.end() != len(alt):
                    return None
                longest = max(longest, 10 - int(tail.group(1)))
    return longest if 0 < longest <= 7 else None


_PREFIX = _decisive_prefix()
_verdicts: bytearray | None = None


def _valid_nanp_cached(digits: str) -> bool:
    """``_valid_nanp`` of ten NANP digits, cached by their decisive prefix."""
    global _verdicts
    if _PREFIX is None:
        return _valid_nanp(int(digits))
    if _verdicts is None:
        _verdicts = bytearray(10**_PREFIX)
    at = int(digits[:_PREFIX])
    known = _verdicts[at]
    if known:
        return known == 1
    valid = _valid_nanp(int(digits))
    _verdicts[at] = 1 if valid else 2
    return valid


# The spellings nearly every row of a big NANP file has, matched on the field as it
# stands: "+19195551212", "(919) 555-1212", "919-555-1212", "919.555.1212", "9195551212",
# "1 919 555 1212", "+1 (919) 555-1212". Every string it matches is, with " ()-." taken
# out, what _NANP_SPELLING matches, with no space around it and not a SIP or tel: URI, so
# ``normalize`` would take its fast path on it with the same digits (common_nanp).
_COMMON_NANP = re.compile(
    r"(?:(\+)1[ .-]?|1[ .-]?)?(?:\(([2-9][0-9]{2})\) ?|([2-9][0-9]{2})[ .-]?)"
    r"([0-9]{3})[ .-]?([0-9]{4})"
)


def common_nanp(raw: str, region: str) -> str | None:
    """The ten digits of ``raw`` when it is a NANP number in a common spelling that
    ``normalize`` accepts (it would return "+1" and these digits), else None: then ask
    ``normalize``. The import's fast path: one regex and a cached verdict."""
    match = _COMMON_NANP.fullmatch(raw)
    if match is None:
        return None
    plus, bracketed, area, exchange, line = match.groups()
    if plus is None and region not in _NANP_FAST_REGIONS:
        return None
    digits = (bracketed or area) + exchange + line
    return digits if _valid_nanp_cached(digits) else None


def normalize(raw: str, region: str) -> tuple[str | None, str | None]:
    """``(address, None)`` for a dialable number or SIP URI, else ``(None, reason)``.

    Numbers come back in E.164 (``+19195551212``), parsed with ``region`` as the default;
    SIP URIs come back as given with the scheme in lower case.
    """
    text = raw.strip()
    if not text:
        return None, "empty"
    if len(text) > MAX_ADDRESS:
        return None, "too long"
    head = text[:5].lower()
    if head.startswith(("sip:", "sips:")):
        return _normalize_sip(text)
    if _TEL.match(text):
        text = text[4:].strip()
        if not text:
            return None, "empty"
    fast = _NANP_SPELLING.fullmatch(text.translate(_FAST_PUNCTUATION))
    if fast is not None and (fast.group(1) == "+1" or region in _NANP_FAST_REGIONS):
        digits = fast.group(2)
        if _valid_nanp_cached(digits):
            return "+1" + digits, None
    return _normalize_slow(text, region)


def _normalize_sip(text: str) -> tuple[str | None, str | None]:
    match = _SIP.fullmatch(text)
    if match is None:
        return None, "not a valid SIP URI (expected sip:user@host[:port])"
    port = match.group(4)
    if port is not None and not 0 < int(port) < 65536:
        return None, f"not a valid SIP URI (port {port})"
    scheme = match.group(1)
    return scheme.lower() + text[len(scheme) :], None


def _normalize_slow(text: str, region: str) -> tuple[str | None, str | None]:
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        kind = exc.error_type
        if kind == NumberParseException.NOT_A_NUMBER:
            return None, "not a phone number"
        if kind == NumberParseException.TOO_LONG:
            return None, "too long"
        if kind in (NumberParseException.TOO_SHORT_NSN, NumberParseException.TOO_SHORT_AFTER_IDD):
            return None, "too short"
        if kind == NumberParseException.INVALID_COUNTRY_CODE:
            if text.startswith("+"):
                return None, "unknown country code"
            return None, f"not a valid number for region {region}"
        return None, "not a phone number"
    if number.extension:
        return None, f"has an extension ({number.extension}), which cannot be dialed"
    if phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible == ValidationResult.TOO_SHORT:
        return None, "too short"
    if possible == ValidationResult.TOO_LONG:
        return None, "too long"
    if possible == ValidationResult.IS_POSSIBLE_LOCAL_ONLY:
        return None, "too short (no area code?)"
    if possible == ValidationResult.INVALID_COUNTRY_CODE:
        return None, "unknown country code"
    national = not text.startswith("+") and number.country_code == (
        phonenumbers.country_code_for_region(region)
    )
    return None, f"not a valid number for region {region}" if national else "not a valid number"
