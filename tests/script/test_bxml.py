"""The BXML documents the receiver answers with (dialer.script.bxml), read back with the
standard library's parser as the carrier would."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from dialer.script import bxml, spec

URL = "https://dialer:s3cret@dialer.example.com/callbacks/catapult"


def verbs(document: bytes) -> list[tuple[str, dict[str, str], str | None]]:
    root = ET.fromstring(document)
    assert root.tag == "Response"
    out = []
    for el in root:
        out.append((el.tag, dict(el.attrib), el.text))
        out += [(f"{el.tag}/{c.tag}", dict(c.attrib), c.text) for c in el]
    return out


def test_a_message_then_goodbye_then_the_dialer_hangs_up() -> None:
    script = spec.build(say="Hi {name} & <co>", goodbye="Bye", columns=["name"])
    got = verbs(bxml.answer(script, {"name": "Zoë"}, URL, "{}"))
    assert [v[0] for v in got] == ["SpeakSentence", "SpeakSentence", "Hangup"]
    assert got[0][2] == "Hi Zoë & <co>"
    assert got[0][1] == {"voice": "susan", "locale": "en_US", "gender": "female"}


def test_keys_make_the_message_the_prompt_of_a_one_key_gather() -> None:
    script = spec.build(say="Press 1", keys="1=yes,#=no")
    tag = '{"attempt":7,"campaign":3}'
    [(verb, attrs, _), (prompt, _, text)] = verbs(bxml.answer(script, {}, URL + "?a=1", tag))
    assert verb == "Gather" and prompt == "Gather/SpeakSentence" and text == "Press 1"
    assert attrs["requestUrl"] == URL + "?a=1"
    assert attrs["maxDigits"] == "1" and attrs["tag"] == tag
    assert attrs["terminatingDigits"] == "*"  # '#' is a key here


def test_a_played_file_is_the_prompt_too() -> None:
    script = spec.build(play="https://cdn.example.com/msg.mp3", keys="1=yes")
    [(_, _, _), (prompt, _, url)] = verbs(bxml.answer(script, {}, URL, "{}"))
    assert (prompt, url) == ("Gather/PlayAudio", "https://cdn.example.com/msg.mp3")


def test_after_the_key_transfer_or_goodbye_and_hang_up() -> None:
    script = spec.build(say="x", keys="1=yes,0=transfer", goodbye="Bye", transfer_to="+19195550000")
    assert [v[0] for v in verbs(bxml.after_gather(script, "1", "max-digits", {}))] == [
        "SpeakSentence",
        "Hangup",
    ]
    [(verb, attrs, _)] = verbs(bxml.after_gather(script, "0", "max-digits", {}))
    assert (verb, attrs["transferTo"]) == ("Transfer", "+19195550000")
    # Waited out: goodbye all the same; hung up: nothing more to run.
    assert verbs(bxml.after_gather(script, "", "inter-digit-timeout", {}))[-1][0] == "Hangup"
    assert verbs(bxml.after_gather(script, "", "hung-up", {})) == []


def test_the_longest_script_fits_the_carriers_document_limit() -> None:
    script = spec.build(say="&" * 1000, keys="1=a", goodbye="<" * 1000)
    assert len(bxml.answer(script, {}, URL + "?" + "x" * 500, "{}" * 100)) < bxml.MAX_DOCUMENT
    assert len(bxml.after_gather(script, "1", "max-digits", {})) < bxml.MAX_DOCUMENT
