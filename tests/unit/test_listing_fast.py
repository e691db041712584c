"""``adapters.listing.parse_listing``'s regex path against ElementTree, on hand-written List Blobs bodies in the
service's compact form: every field as an XML parser reads it (entities, character references, CRs, unicode,
``Encoded="true"`` names), BlobPrefix entries, NextMarker present, empty, self-closed or absent, quoted and unquoted
ETags, a missing Content-Length; bodies in any other form (comments, CDATA, whitespace, another element order) are
read by the ElementTree fallback, with the same result. The reference is written here, independently of the module."""
from __future__ import annotations

import random
from urllib.parse import quote, unquote
from xml.etree.ElementTree import Element, ParseError, fromstring
from xml.sax.saxutils import escape

import pytest

from adapters import listing
from adapters.listing import ListedBlob, parse_listing

HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><EnumerationResults ServiceEndpoint="http://x/a" ' \
       'ContainerName="c"><Prefix/><Marker/><MaxResults>5000</MaxResults><Blobs>'
PROPS = ("<Creation-Time>Wed, 02 Dec 2026 04:03:42 GMT</Creation-Time><Last-Modified>Wed, 02 Dec 2026 04:03:42 GMT"
         "</Last-Modified>")
TAIL = ("<Content-Type>application/octet-stream</Content-Type><Content-MD5>1B2M2Y8AsgTpgAmY7PhCfg==</Content-MD5>"
        "<BlobType>BlockBlob</BlobType><LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState>"
        "<ServerEncrypted>true</ServerEncrypted><AccessTier>Hot</AccessTier></Properties></Blob>")


def blob(name: str, etag: str = "0x8DCAFE0", size: str | None = "12", attr: str = "") -> str:
    """One Blob entry as the service writes it; ``name`` and ``etag`` are raw XML text (escape them first)."""
    length = "" if size is None else f"<Content-Length>{size}</Content-Length>"
    return f"<Blob><Name{attr}>{name}</Name><Properties>{PROPS}<Etag>{etag}</Etag>{length}{TAIL}"


def prefix(name: str, attr: str = "") -> str:
    return f"<BlobPrefix><Name{attr}>{name}</Name></BlobPrefix>"


def body(*entries: str, marker: str | None = "<NextMarker/>") -> bytes:
    return (HEAD + "".join(entries) + "</Blobs>" + (marker or "") + "</EnumerationResults>").encode("utf-8")


def reference(data: bytes) -> tuple[list[ListedBlob], list[str], str | None]:
    """What an XML parser reads: each Blob's Name (percent-decoded when Encoded="true"), Properties/Etag (quotes
    stripped), Properties/Content-Length (0 when missing); each BlobPrefix's Name; NextMarker's text (None if empty)."""
    root = fromstring(data)

    def name(el: Element) -> str:
        n = el.find("Name")
        assert n is not None
        return unquote(n.text or "") if n.get("Encoded") == "true" else (n.text or "")

    blobs = []
    for b in root.iter("Blob"):
        props = b.find("Properties")
        assert props is not None
        blobs.append(ListedBlob(name(b), (props.findtext("Etag") or "").strip('"'),
                                int(props.findtext("Content-Length") or 0)))
    return blobs, [name(p) for p in root.iter("BlobPrefix")], root.findtext("NextMarker") or None


def check(data: bytes, fast: bool = True) -> listing.ListedPage:
    """parse_listing equals the reference; ``fast``: the regex path read it (else the fallback did)."""
    page = parse_listing([data[:100], data[100:]])
    assert (page.blobs, page.prefixes, page.next_marker) == reference(data)
    assert (listing._parse_fast(data) is not None) == fast
    return page


CASES = {
    "plain": [blob("site000/cam00/IMG_00000000.JPG")],
    "spaces and unicode": [blob("dir with space/ünïcödé/日本語 写真.jpg"), blob("emoji/🦊 fox.jpg")],
    "entities": [blob("a&amp;b/&lt;x&gt; &quot;q&quot; &apos;s&apos;.jpg")],
    "character references": [blob("&#65;&#x42;&#x1F98A;/&#233;.jpg"), blob("tab&#9;nl&#10;cr&#13;.jpg")],
    "a literal CR (normalised as XML does)": [blob("cr\r\nlf\rx.jpg")],
    "percent-encoded names": [blob("site%201%2F%EF%BF%BF%01.jpg", attr=' Encoded="true"'),
                              blob("100%25.jpg", attr=' Encoded="false"'), blob("50% off.jpg")],
    "encoded with entities": [blob("a%26b&amp;c.jpg", attr=' Encoded="true"')],
    "etags quoted and unquoted": [blob("a.jpg", etag='"0x1"'), blob("b.jpg", etag="0x2"),
                                  blob("c.jpg", etag="&quot;0x3&quot;"), blob("d.jpg", etag="")],
    "sizes": [blob("a.jpg", size="0"), blob("b.jpg", size="123456789012"), blob("c.jpg", size=None),
              blob("d.jpg", size="")],
    "Content-Length outside Properties (not read, as findtext)": [
        blob("a.jpg", size=None).replace("</Blob>", "<Content-Length>5</Content-Length></Blob>")],
    "more properties first": [blob("a.jpg").replace("<Last-Modified>", "<Owner>me</Owner><Last-Modified>"),
                              blob("b.jpg").replace("<Creation-Time>", "<X/><Creation-Time>")],
    "a second Content-Length": [blob("a.jpg").replace("<Content-Type>", "<Content-Length>9</Content-Length>"
                                                      "<Content-Type>")],
    "an Etag before Properties (not read, as findtext)": [
        blob("a.jpg").replace("<Properties>", "<Etag>0x9</Etag><Properties>")],
    # the shape of Azure's own answers (as recorded in the Azure SDKs' test recordings): versions, self-closed
    # empty properties, tags and OrMetadata after Properties
    "Azure's shape": [
        "<Blob><Name>blob159210827051603960</Name><VersionId>2020-06-14T04:17:50.5321926Z</VersionId>"
        "<IsCurrentVersion>true</IsCurrentVersion><Properties><Creation-Time>Sun, 14 Jun 2020 04:17:50 GMT"
        "</Creation-Time><Last-Modified>Sun, 14 Jun 2020 04:17:50 GMT</Last-Modified><Etag>0x8D81019E6CC9FC6</Etag>"
        "<Content-Length>11</Content-Length><Content-Type>application/octet-stream</Content-Type><Content-Encoding />"
        "<Content-Language /><Content-CRC64 /><Content-MD5>sQqNsWTgdUEFt6mb5y4/5Q==</Content-MD5><Cache-Control />"
        "<Content-Disposition /><BlobType>BlockBlob</BlobType><AccessTier>Hot</AccessTier><TagCount>2</TagCount>"
        "</Properties><Tags><TagSet><Tag><Key>tag1</Key><Value>val1</Value></Tag></TagSet></Tags><OrMetadata />"
        "</Blob>", blob("plain.jpg")],
    "exclamation and question marks": [blob("!?!/a!b?.jpg"), blob("!!!!!!!!!!!!!!!!!!!!.jpg"),
                                       blob("??????????????????????.jpg")],
    "prefixes": [prefix("site 1/"), blob("site 1.jpg"), prefix("a&amp;b/"), prefix("x%01%2F", ' Encoded="true"'),
                 prefix("ü/")],
    "only prefixes": [prefix("a/"), prefix("b/")],
    "empty": [],
}
MARKERS = {"self-closed": "<NextMarker/>", "self-closed spaced": "<NextMarker />", "empty": "<NextMarker></NextMarker>",
           "absent": None, "a name": "<NextMarker>site000/cam00/IMG_00004999.JPG</NextMarker>",
           "opaque": "<NextMarker>2!96!MDAwMDE3IXNpdGUgMS96LmpwZyEwMDAwMjgh</NextMarker>",
           "with entities": "<NextMarker>a&amp;b&#x20;c</NextMarker>"}


@pytest.mark.parametrize("marker", MARKERS)
@pytest.mark.parametrize("case", CASES)
def test_the_regex_path_reads_what_an_xml_parser_reads(case: str, marker: str) -> None:
    check(body(*CASES[case], marker=MARKERS[marker]))


def test_decoded_values() -> None:
    """The reference itself, on a few fields (so that both cannot be wrong the same way)."""
    page = check(body(*CASES["entities"], *CASES["character references"], *CASES["percent-encoded names"],
                      *CASES["etags quoted and unquoted"], prefix("a&amp;b/"),
                      marker=MARKERS["with entities"]))
    assert [b.name for b in page.blobs[:4]] == ["a&b/<x> \"q\" 's'.jpg", "AB\U0001F98A/\u00e9.jpg", "tab\tnl\ncr\r.jpg",
                                                "site 1/\uffff\x01.jpg"]
    assert [b.name for b in page.blobs[4:6]] == ["100%25.jpg", "50% off.jpg"]
    assert [b.etag for b in page.blobs[6:]] == ["0x1", "0x2", "0x3", ""]
    assert page.prefixes == ["a&b/"] and page.next_marker == "a&b c"
    assert check(body(*CASES["sizes"])).blobs == [
        ListedBlob("a.jpg", "0x8DCAFE0", 0), ListedBlob("b.jpg", "0x8DCAFE0", 123456789012),
        ListedBlob("c.jpg", "0x8DCAFE0", 0), ListedBlob("d.jpg", "0x8DCAFE0", 0)]


OTHER_FORMS = {
    "comment between entries": (blob("a.jpg") + "<!-- <Blob><Name>fake.jpg</Name><Properties><Etag>1</Etag>"
                                "</Properties></Blob> -->" + blob("b.jpg")),
    "comment inside a blob": blob("a.jpg").replace("<Properties>", "<Properties><!-- <Content-Length>9"
                                                   "</Content-Length> -->"),
    "CDATA name": blob("<![CDATA[a&b<c>.jpg]]>"),
    "CDATA etag": blob("a.jpg", etag="<![CDATA[0x1]]>"),
    "processing instruction": blob("a.jpg") + "<?pi <Blob><Name>x</Name> ?>",
    "whitespace between tags": blob("a.jpg").replace("<Blob><Name>", "<Blob>\n  <Name>"),
    "single-quoted attribute": blob("a%20b.jpg", attr=" Encoded='true'"),
    "a space in a tag": blob("a.jpg").replace("<Content-Length>", "<Content-Length >"),
    "self-closed Content-Length": blob("a.jpg", size=None).replace("<Content-Type>", "<Content-Length/><Content-Type>"),
    "Content-Length before Etag": blob("a.jpg", size=None).replace("<Etag>",
                                                                  "<Content-Length>7</Content-Length><Etag>"),
    "no Etag": blob("a.jpg").replace("<Etag>0x8DCAFE0</Etag>", "") + blob("b.jpg"),
    "an empty name": blob("") + blob("b.jpg"),
    "a prefix with more": prefix("a/").replace("</Name>", "</Name><X/>"),
    "comment after many marks": blob("!!!!!!!!!!!!!!!!.jpg") + "<!-- x -->",
    "PI after many marks": blob("????????????????.jpg") + "<?x y?>",
    "comment after a marker-like name": blob("2!96!MDAwMDE3IXNpdGUgMS96LmpwZyEwMDAwMjgh") + "<!---->",

    "Name not first": blob("a.jpg").replace("<Name>a.jpg</Name><Properties>", "<Properties>").replace(
        "</Properties>", "</Properties><Name>a.jpg</Name>"),
}


@pytest.mark.parametrize("form", OTHER_FORMS)
def test_other_forms_fall_back_to_elementtree(form: str) -> None:
    check(body(blob("first.jpg"), OTHER_FORMS[form], blob("last.jpg"), marker=MARKERS["a name"]), fast=False)


def test_a_blob_without_properties_is_an_error() -> None:
    bad = body(blob("a.jpg").replace("<Properties>", "<Props>").replace("</Properties>", "</Props>"))
    assert listing._parse_fast(bad) is None
    with pytest.raises(ValueError, match="without Properties"):
        parse_listing([bad])


def test_whole_body_forms() -> None:
    compact = body(blob("a.jpg"), prefix("p/"))
    check(compact.replace(b"<?xml", b"\xef\xbb\xbf<?xml"))  # Azure's byte order mark
    check(compact.replace(b' encoding="UTF-8" standalone="yes"', b""))  # UTF-8 by default
    check(compact[compact.index(b"<Enum"):])  # no declaration
    check(compact + b"\r\n")
    with pytest.raises(ParseError):  # white space to Python, not to XML
        parse_listing([compact.replace(b"?><Enum", "?>\u2028<Enum".encode())])
    check(compact.replace(b"<EnumerationResults", b"<!DOCTYPE EnumerationResults><EnumerationResults"), fast=False)
    latin = compact.replace(b"UTF-8", b"ISO-8859-1").replace(b"a.jpg", "\u00e9.jpg".encode("latin-1"))
    assert check(latin, fast=False).blobs[0].name == "\u00e9.jpg"
    with pytest.raises(ParseError):
        parse_listing([compact.replace(b"a.jpg", "\u00e9.jpg".encode("latin-1"))])  # not UTF-8
    with pytest.raises(ParseError):
        parse_listing([compact[:-30]])  # truncated
    with pytest.raises(ParseError):
        parse_listing([compact[:-len("</EnumerationResults>")]])
    with pytest.raises(ParseError):
        parse_listing([compact.replace(b"<Blob><Name>a.jpg", b"<Blob><Name>a&nbsp;.jpg")])  # undefined entity


def test_random_names_read_as_an_xml_parser_reads_them() -> None:
    """Names drawn from characters that need escaping, unicode beyond the BMP, controls XML allows, '%', written
    raw, as entities, as decimal/hex character references, or percent-encoded with Encoded="true"."""
    rng = random.Random(11)
    pool = list("ab /.%&<>\"'\t\n\r;#+~é日🦊\u2028\ufffd") + ["\x85"]
    entries = []
    for i in range(400):
        name = "".join(rng.choice(pool) for _ in range(rng.randint(1, 12))) + ".jpg"
        how = rng.randrange(4)
        if how == 0:
            raw, attr = escape(name, {'"': "&quot;", "'": "&apos;", "\r": "&#13;"}), ""
        elif how == 1:
            raw, attr = "".join(f"&#{ord(ch)};" for ch in name), ""
        elif how == 2:
            raw, attr = "".join(f"&#x{ord(ch):X};" if rng.random() < 0.5 else escape(ch, {"\r": "&#xd;"})
                                for ch in name), ""
        else:
            raw, attr = quote(name, safe="/ "), ' Encoded="true"'
        entries.append(blob(raw, etag=f'"0x{i:X}"', size=str(i), attr=attr) if i % 7 else prefix(raw + "/", attr))
    page = check(body(*entries, marker=MARKERS["with entities"]))
    assert len(page.blobs) + len(page.prefixes) == 400 and page.blobs[0].size == 1
