"""Tables print what the API returned, character for character."""

from __future__ import annotations

from netvirt.cli import output


def test_a_mac_with_an_emoji_code_prints_verbatim() -> None:
    """Rich would turn ":cd:" in fa:16:3e:cd:85:9f into an emoji without emoji=False."""
    con = output.console()
    with con.capture() as captured:
        con.print("fa:16:3e:cd:85:9f")
    assert captured.get().strip() == "fa:16:3e:cd:85:9f"
