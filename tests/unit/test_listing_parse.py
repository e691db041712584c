"""``adapters.listing.parse_listing`` on List Blobs bodies Azurite cannot produce: names the service percent-encodes
(``Encoded="true"``), character references, quoted ETags, pretty-printed XML, and chunk boundaries anywhere (the body
arrives in the transport's chunks; here one byte at a time too). The live protocol is compared with the SDK in
``tests/integration/test_listing.py``."""
from __future__ import annotations

from xml.etree.ElementTree import ParseError

import pytest

from adapters.listing import ListedBlob, parse_listing

BODY = """<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="https://acct.blob.core.windows.net/" ContainerName="cams">
  <Prefix>site 1/</Prefix>
  <Marker />
  <MaxResults>3</MaxResults>
  <Delimiter>/</Delimiter>
  <Blobs>
    <BlobPrefix><Name>site 1/a&amp;b/</Name></BlobPrefix>
    <Blob>
      <Name>site 1/caf\u00e9 &lt;1&gt;.jpg</Name>
      <VersionId>2026-12-02T00:00:00.0000000Z</VersionId>
      <Properties>
        <Creation-Time>Wed, 02 Dec 2026 00:27:10 GMT</Creation-Time>
        <Etag>0x8DCAFE&#48;</Etag>
        <Content-Length>123456789012</Content-Length>
        <Content-Type>image/jpeg</Content-Type>
      </Properties>
      <OrMetadata />
    </Blob>
    <Blob>
      <Name Encoded="true">site%201%2F%EF%BF%BF%01.jpg</Name>
      <Properties><Etag>"0x1"</Etag><Content-Length /></Properties>
    </Blob>
    <BlobPrefix><Name Encoded="true">site%201%2F%01%2F</Name></BlobPrefix>
  </Blobs>
  <NextMarker>2!96!MDAwMDE3IXNpdGUgMS96LmpwZyEwMDAwMjgh</NextMarker>
</EnumerationResults>
"""


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_fields_names_and_marker_whatever_the_chunks(chunk: int) -> None:
    data = BODY.encode("utf-8")
    page = parse_listing(data[i:i + chunk] for i in range(0, len(data), chunk))
    assert page.blobs == [ListedBlob("site 1/caf\u00e9 <1>.jpg", "0x8DCAFE0", 123456789012),
                          ListedBlob("site 1/\uffff\x01.jpg", "0x1", 0)]
    assert page.prefixes == ["site 1/a&b/", "site 1/\x01/"]
    assert page.next_marker == "2!96!MDAwMDE3IXNpdGUgMS96LmpwZyEwMDAwMjgh"


def test_the_last_page_and_an_empty_container() -> None:
    empty = (b'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ContainerName="c"><Blobs />'
             b"<NextMarker /></EnumerationResults>")
    page = parse_listing([empty])
    assert (page.blobs, page.prefixes, page.next_marker) == ([], [], None)


def test_a_truncated_body_is_an_error_not_a_short_page() -> None:
    with pytest.raises(ParseError):
        parse_listing([BODY.encode("utf-8")[:-200]])
