use switchboard_xmpp_proto::{
    Element, Frame, Limits, NS_CLIENT, NS_XML, StreamError, StreamOpen, StreamParser,
    stream_error_xml,
};

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='example.com' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
    version='1.0' xml:lang='en' id='abc'>";

/// Feed everything at once and drain all frames, stopping at the first error.
fn parse_all(p: &mut StreamParser, input: &[u8]) -> (Vec<Frame>, Option<StreamError>) {
    p.feed(input);
    let mut frames = Vec::new();
    loop {
        match p.next() {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

fn error_of(input: &str) -> StreamError {
    error_with(Limits::default(), input.as_bytes())
}

fn error_with(limits: Limits, input: &[u8]) -> StreamError {
    let mut p = StreamParser::new(limits);
    let (_, err) = parse_all(&mut p, input);
    let err = err.unwrap_or_else(|| panic!("no error for {:?}", String::from_utf8_lossy(input)));
    // The parser stays failed.
    assert_eq!(p.next(), Err(err.clone()));
    err
}

fn stanza(f: &Frame) -> &Element {
    match f {
        Frame::Stanza(e) => e,
        other => panic!("expected stanza, got {other:?}"),
    }
}

const CLIENT_STREAM: &str = concat!(
    "<?xml version='1.0'?><stream:stream to='example.com' ",
    "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' ",
    "version='1.0' xml:lang='en' id='abc'>\n",
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>biwsbj1qdWxpZXQscj1vTXNUQUF3QUFBQU1BQUFBTlAwVEFBQUFBQUJQVTBBQQ==</auth>\n",
    " \t\r\n",
    "<iq type='set' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>",
    "<resource>balcony</resource></bind></iq>",
    "<message to='romeo@example.net' type='chat' id='m1' xml:lang='en'>",
    "<body>a &lt; b &amp;&amp; c &gt; d &quot;q&quot; &apos;s&apos; &#x263A; caf\u{e9}</body>",
    "<x:thread xmlns:x='jabber:client' x:parent='p1'>t1</x:thread>",
    "<active xmlns='http://jabber.org/protocol/chatstates'/>",
    "</message>",
    "<presence/>",
    "</stream:stream>",
);

fn check_client_stream(frames: &[Frame]) {
    assert_eq!(frames.len(), 6, "{frames:#?}");
    assert_eq!(
        frames[0],
        Frame::StreamOpen(StreamOpen {
            to: Some("example.com".into()),
            from: None,
            version: Some("1.0".into()),
            lang: Some("en".into()),
            id: Some("abc".into()),
            namespace: NS_CLIENT.into(),
        })
    );
    let auth = stanza(&frames[1]);
    assert!(auth.is("auth", "urn:ietf:params:xml:ns:xmpp-sasl"));
    assert_eq!(auth.attr("mechanism"), Some("SCRAM-SHA-256"));
    assert!(auth.text().starts_with("biwsbj1q"));

    let iq = stanza(&frames[2]);
    assert!(iq.is("iq", NS_CLIENT));
    assert_eq!(iq.attr("type"), Some("set"));
    assert_eq!(iq.attr("id"), Some("bind_1"));
    let bind = iq
        .get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
        .unwrap();
    let res = bind
        .get_child("resource", "urn:ietf:params:xml:ns:xmpp-bind")
        .unwrap();
    assert_eq!(res.text(), "balcony");

    let msg = stanza(&frames[3]);
    assert!(msg.is("message", NS_CLIENT));
    assert_eq!(msg.attr_ns(NS_XML, "lang"), Some("en"));
    assert_eq!(msg.attr("lang"), None);
    assert_eq!(
        msg.get_child("body", NS_CLIENT).unwrap().text(),
        "a < b && c > d \"q\" 's' \u{263a} caf\u{e9}"
    );
    let thread = msg.get_child("thread", NS_CLIENT).unwrap();
    assert_eq!(thread.attr_ns(NS_CLIENT, "parent"), Some("p1"));
    assert_eq!(thread.attr("parent"), None);
    assert_eq!(msg.children().count(), 3);
    assert!(
        msg.get_child("active", "http://jabber.org/protocol/chatstates")
            .is_some()
    );

    let pres = stanza(&frames[4]);
    assert!(pres.is("presence", NS_CLIENT));
    assert!(pres.nodes().is_empty());
    assert_eq!(frames[5], Frame::StreamClose);
}

#[test]
fn realistic_client_stream_in_one_piece() {
    let mut p = StreamParser::default();
    let (frames, err) = parse_all(&mut p, CLIENT_STREAM.as_bytes());
    assert_eq!(err, None);
    check_client_stream(&frames);
    assert!(!p.is_open());
    // After the close nothing more comes out, whatever is fed.
    p.feed(b"<garbage");
    assert_eq!(p.next(), Ok(None));
}

#[test]
fn realistic_client_stream_byte_by_byte() {
    let mut p = StreamParser::default();
    let mut frames = Vec::new();
    for b in CLIENT_STREAM.as_bytes() {
        p.feed(std::slice::from_ref(b));
        while let Some(f) = p.next().unwrap() {
            frames.push(f);
        }
    }
    check_client_stream(&frames);
}

#[test]
fn realistic_client_stream_in_odd_chunks() {
    for chunk in [2, 3, 7, 13, 64] {
        let mut p = StreamParser::default();
        let mut frames = Vec::new();
        for c in CLIENT_STREAM.as_bytes().chunks(chunk) {
            p.feed(c);
            while let Some(f) = p.next().unwrap() {
                frames.push(f);
            }
        }
        check_client_stream(&frames);
    }
}

#[test]
fn header_is_reported_before_any_stanza_arrives() {
    let mut p = StreamParser::default();
    p.feed(HEADER.as_bytes());
    assert!(matches!(p.next(), Ok(Some(Frame::StreamOpen(_)))));
    assert!(p.is_open());
    assert_eq!(p.next(), Ok(None));
    p.feed(b"<presence><show>away</sh");
    assert_eq!(p.next(), Ok(None));
    p.feed(b"ow></presence>");
    let f = p.next().unwrap().unwrap();
    assert_eq!(
        stanza(&f).get_child("show", NS_CLIENT).unwrap().text(),
        "away"
    );
}

#[test]
fn server_and_component_namespaces_are_accepted() {
    for ns in ["jabber:server", "jabber:component:accept"] {
        let mut p = StreamParser::default();
        let input = format!(
            "<stream:stream xmlns='{ns}' xmlns:stream='http://etherx.jabber.org/streams' from='a.example' to='b.example'>"
        );
        let (frames, err) = parse_all(&mut p, input.as_bytes());
        assert_eq!(err, None);
        match &frames[0] {
            Frame::StreamOpen(o) => {
                assert_eq!(o.namespace, ns);
                assert_eq!(o.from.as_deref(), Some("a.example"));
                assert_eq!(o.version, None);
            }
            f => panic!("{f:?}"),
        }
    }
}

#[test]
fn reset_after_starttls_and_sasl() {
    let mut p = StreamParser::default();
    let first = format!(
        "{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message>injected</message>"
    );
    p.feed(first.as_bytes());
    assert!(matches!(p.next(), Ok(Some(Frame::StreamOpen(_)))));
    let st = p.next().unwrap().unwrap();
    assert!(stanza(&st).is("starttls", "urn:ietf:params:xml:ns:xmpp-tls"));
    // <proceed/> sent; TLS handshake; new stream. Pipelined plaintext is dropped.
    p.reset();
    assert_eq!(p.buffered(), 0);
    assert!(!p.is_open());
    // A new XML declaration and header are accepted after the reset.
    let second = format!("{HEADER}<iq type='get' id='1'/>");
    let (frames, err) = parse_all(&mut p, second.as_bytes());
    assert_eq!(err, None);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(matches!(frames[0], Frame::StreamOpen(_)));
    assert!(stanza(&frames[1]).is("iq", NS_CLIENT));

    // Without a reset a second header is a nested element inside the stream
    // (a stanza named stream in the streams namespace), never a new header.
    let mut q = StreamParser::default();
    let (frames, _) = parse_all(&mut q, format!("{HEADER}{HEADER}").as_bytes());
    assert_eq!(frames.len(), 1);

    // reset also clears a failed parser.
    let mut r = StreamParser::default();
    let (_, err) = parse_all(&mut r, b"<<<");
    assert!(err.is_some());
    r.reset();
    let (frames, err) = parse_all(&mut r, HEADER.as_bytes());
    assert_eq!(err, None);
    assert_eq!(frames.len(), 1);
}

#[test]
fn whitespace_keepalives_between_stanzas() {
    let mut p = StreamParser::new(Limits {
        max_stanza_bytes: 1024,
        ..Limits::default()
    });
    let (frames, err) = parse_all(&mut p, HEADER.as_bytes());
    assert_eq!((frames.len(), err), (1, None));
    // Far more whitespace in total than one stanza may hold, fed over time.
    for _ in 0..100 {
        p.feed(&[b' '; 100]);
        assert_eq!(p.next(), Ok(None));
    }
    p.feed(b"<presence/>");
    assert!(matches!(p.next(), Ok(Some(Frame::Stanza(_)))));
}

// ---- limits ----

#[test]
fn stanza_too_big() {
    let limits = Limits {
        max_stanza_bytes: 1000,
        ..Limits::default()
    };
    let body = "x".repeat(2000);
    let input = format!("{HEADER}<message><body>{body}</body></message>");
    let e = error_with(limits, input.as_bytes());
    assert!(matches!(e, StreamError::PolicyViolation(_)), "{e:?}");
    assert_eq!(e.condition(), "policy-violation");
    assert!(e.to_string().contains("max_stanza_bytes"), "{e}");

    // Just under the limit passes; the default limit admits 200 KiB.
    let ok = format!(
        "{HEADER}<message><body>{}</body></message>",
        "y".repeat(900)
    );
    let (frames, err) = parse_all(&mut StreamParser::new(limits), ok.as_bytes());
    assert_eq!((frames.len(), err), (2, None));
    let big = format!(
        "{HEADER}<message><body>{}</body></message>",
        "z".repeat(200 * 1024)
    );
    let (frames, err) = parse_all(&mut StreamParser::default(), big.as_bytes());
    assert_eq!(err, None);
    assert_eq!(
        stanza(&frames[1]).children().next().unwrap().text().len(),
        200 * 1024
    );
}

#[test]
fn endless_text_attribute_or_tag_is_cut_off_while_feeding() {
    let limits = Limits {
        max_stanza_bytes: 4096,
        ..Limits::default()
    };
    for (start, filler) in [
        ("<message><body>", b'a'),
        ("<message to='", b'b'),
        ("<messageeeee", b'e'),
        ("<message ", b' '),
    ] {
        let mut p = StreamParser::new(limits);
        p.feed(HEADER.as_bytes());
        p.feed(start.as_bytes());
        assert!(matches!(p.next(), Ok(Some(Frame::StreamOpen(_)))));
        let mut failed = None;
        for _ in 0..100 {
            p.feed(&[filler; 512]);
            match p.next() {
                Ok(None) => assert!(p.buffered() <= 4096),
                Ok(Some(f)) => panic!("unexpected {f:?}"),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let e = failed.unwrap_or_else(|| panic!("no error for {start}"));
        assert_eq!(e.condition(), "policy-violation", "{start}: {e}");
    }
}

#[test]
fn long_names_and_attribute_values() {
    let limits = Limits {
        max_token_bytes: 1024,
        ..Limits::default()
    };
    let e = error_with(
        limits,
        format!("{HEADER}<message to='{}'/>", "j".repeat(2000)).as_bytes(),
    );
    assert_eq!(e.condition(), "policy-violation", "{e:?}");
    assert!(e.text().contains("max_token_bytes (1024"), "{e}");
    let e = error_with(
        limits,
        format!("{HEADER}<{}/>", "n".repeat(2000)).as_bytes(),
    );
    assert_eq!(e.condition(), "policy-violation", "{e:?}");
    // Text longer than a token is fine: it is split and merged again.
    let text = "t".repeat(5000);
    let ok = format!("{HEADER}<message><body>{text}</body></message>");
    let (frames, err) = parse_all(&mut StreamParser::new(limits), ok.as_bytes());
    assert_eq!(err, None);
    assert_eq!(stanza(&frames[1]).children().next().unwrap().text(), text);
}

#[test]
fn endless_header_is_cut_off() {
    let limits = Limits {
        max_stanza_bytes: 2048,
        ..Limits::default()
    };
    let mut input = b"<stream:stream xmlns='jabber:client' a='".to_vec();
    input.extend(std::iter::repeat_n(b'q', 10_000));
    assert_eq!(error_with(limits, &input).condition(), "policy-violation");
}

#[test]
fn too_deep() {
    let limits = Limits {
        max_depth: 8,
        ..Limits::default()
    };
    let ok = format!("{HEADER}{}{}", "<a>".repeat(8), "</a>".repeat(8));
    let (frames, err) = parse_all(&mut StreamParser::new(limits), ok.as_bytes());
    assert_eq!((frames.len(), err), (2, None));

    let deep = format!("{HEADER}{}", "<a>".repeat(9));
    let e = error_with(limits, deep.as_bytes());
    assert!(matches!(e, StreamError::PolicyViolation(_)), "{e:?}");
    assert!(e.text().contains("max_depth"), "{e}");

    // Default depth limit against a bomb of nested elements.
    let bomb = format!("{HEADER}{}", "<a>".repeat(10_000));
    assert_eq!(error_of(&bomb).condition(), "policy-violation");
}

#[test]
fn too_many_attributes() {
    let limits = Limits {
        max_attributes: 6, // HEADER has six, namespace declarations included
        ..Limits::default()
    };
    let ok = format!("{HEADER}<iq a='1' b='2' c='3' d='4' xmlns:x='urn:x' x:e='5'/>");
    let (frames, err) = parse_all(&mut StreamParser::new(limits), ok.as_bytes());
    assert_eq!((frames.len(), err), (2, None));
    let bad = format!("{HEADER}<iq a='1' b='2' c='3' d='4' e='5' f='6' g='7'/>");
    let e = error_with(limits, bad.as_bytes());
    assert_eq!(e.condition(), "policy-violation");
    assert!(e.text().contains("max_attributes (6)"), "{e}");
}

// ---- restricted XML ----

#[test]
fn rejected_constructs_are_restricted_xml() {
    let cases = [
        "<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY x 'y'>]><stream:stream/>".to_string(),
        "<!DOCTYPE stream:stream><stream:stream/>".to_string(),
        "<!ENTITY lol 'lol'>".to_string(),
        format!("{HEADER}<message><body>&foo;</body></message>"),
        format!("{HEADER}<message to='&bar;'/>"),
        format!("{HEADER}<?pi data?>"),
        format!("{HEADER}<message><?pi data?></message>"),
        "<?pi data?><stream:stream/>".to_string(),
        format!("{HEADER}<!-- comment -->"),
        format!("{HEADER}<message><!-- c --></message>"),
        "<!-- c --><stream:stream/>".to_string(),
        format!("{HEADER}<message><?xml version='1.0'?></message>"),
    ];
    for c in &cases {
        let e = error_of(c);
        assert_eq!(e.condition(), "restricted-xml", "{c}: {e:?}");
        assert!(matches!(e, StreamError::RestrictedXml(_)));
    }
}

#[test]
fn malformed_xml_is_not_well_formed() {
    let cases = [
        format!("{HEADER}<message></iq>"),
        format!("{HEADER}<message a='1' a='2'/>"),
        format!("{HEADER}<message x:a='1'/>"),
        format!("{HEADER}<x:message/>"),
        format!("{HEADER}<message xmlns:p='urn:a' xmlns:q='urn:a' p:a='1' q:a='2'/>"),
        format!("{HEADER}<message <"),
        format!("{HEADER}<message>\u{1}</message>"),
        "<stream:stream xmlns='jabber:client'>".to_string(),
        "not xml at all".to_string(),
        format!("{HEADER}<message xmlns:xml='urn:not-xml'/>"),
    ];
    for c in &cases {
        let e = error_of(c);
        assert_eq!(e.condition(), "not-well-formed", "{c}: {e:?}");
    }
    let mut p = StreamParser::default();
    let mut bad_utf8 = HEADER.as_bytes().to_vec();
    bad_utf8.extend_from_slice(b"<message>\xff\xfe</message>");
    let (_, err) = parse_all(&mut p, &bad_utf8);
    assert_eq!(err.unwrap().condition(), "not-well-formed");
}

#[test]
fn wrong_namespaces() {
    let cases = [
        "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>",
        "<stream xmlns='jabber:client'>",
        "<stream:stream xmlns='urn:other' xmlns:stream='http://etherx.jabber.org/streams'>",
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",
        "<stream:features xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    ];
    for c in cases {
        let e = error_of(c);
        assert!(matches!(e, StreamError::InvalidNamespace(_)), "{c}: {e:?}");
        assert_eq!(e.condition(), "invalid-namespace");
    }
}

#[test]
fn text_at_stream_level_is_bad_format() {
    let e = error_of(&format!("{HEADER}hello"));
    assert_eq!(e.condition(), "bad-format");
}

#[test]
fn non_utf8_declaration_is_unsupported_encoding() {
    let e = error_of("<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>");
    assert_eq!(e.condition(), "unsupported-encoding", "{e:?}");
}

// ---- serializer ----

#[test]
fn stream_error_element() {
    assert_eq!(
        stream_error_xml("policy-violation", Some("stanza too <big> & ugly")),
        "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>stanza too &lt;big&gt; &amp; ugly</text>\
         </stream:error>"
    );
    assert_eq!(
        stream_error_xml("not-well-formed", None),
        "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
    );
    let e = error_of(&format!("{HEADER}<a><?pi?></a>"));
    assert!(e.to_xml().contains("<restricted-xml "));
    // The error element parses back inside a stream.
    let mut p = StreamParser::default();
    let (frames, err) = parse_all(&mut p, format!("{HEADER}{}", e.to_xml()).as_bytes());
    assert_eq!(err, None);
    let se = stanza(&frames[1]);
    assert!(se.is("error", "http://etherx.jabber.org/streams"));
    assert!(
        se.get_child("restricted-xml", "urn:ietf:params:xml:ns:xmpp-streams")
            .is_some()
    );
}

fn reparse(xml: &str, stream_ns: &str) -> Element {
    let input = format!(
        "<stream:stream xmlns='{stream_ns}' xmlns:stream='http://etherx.jabber.org/streams'>{xml}"
    );
    let mut p = StreamParser::default();
    let (frames, err) = parse_all(&mut p, input.as_bytes());
    assert_eq!(err, None, "{xml}");
    assert_eq!(frames.len(), 2, "{xml}");
    match frames.into_iter().nth(1).unwrap() {
        Frame::Stanza(e) => e,
        f => panic!("{f:?}"),
    }
}

#[test]
fn serializer_round_trips() {
    let tricky = "quotes \" ' amp & lt < gt > tab\there\nnewline\r\nCR ]]> \u{263a}";
    let el = Element::new("message", NS_CLIENT)
        .with_attr("to", tricky)
        .with_attr("id", "m1")
        .with_child(Element::new("body", NS_CLIENT).with_text(tricky))
        .with_child(Element::new("x", "").with_text("no namespace"))
        .with_child(
            Element::new("stanza-id", "urn:xmpp:sid:0")
                .with_attr("id", "s1")
                .with_child(Element::new("inner", "urn:xmpp:sid:0")),
        )
        .with_text("tail");
    assert_eq!(el.get_child("body", NS_CLIENT).unwrap().text(), tricky);
    for xml in [el.to_xml(), el.to_xml_in(NS_CLIENT)] {
        assert_eq!(reparse(&xml, NS_CLIENT), el, "{xml}");
    }
    assert!(el.to_xml_in(NS_CLIENT).starts_with("<message to="));
    assert!(el.to_xml().starts_with("<message xmlns=\"jabber:client\""));
    // Written into a server stream it keeps its own namespace.
    assert_eq!(reparse(&el.to_xml_in("jabber:server"), "jabber:server"), el);
}

#[test]
fn parsed_stanzas_round_trip() {
    let mut p = StreamParser::default();
    let (frames, err) = parse_all(&mut p, CLIENT_STREAM.as_bytes());
    assert_eq!(err, None);
    for f in &frames {
        if let Frame::Stanza(e) = f {
            assert_eq!(&reparse(&e.to_xml(), NS_CLIENT), e);
            assert_eq!(&reparse(&e.to_xml_in(NS_CLIENT), NS_CLIENT), e);
        }
    }
}

#[test]
fn set_attr_replaces() {
    let mut e = Element::new("iq", NS_CLIENT).with_attr("id", "1");
    e.set_attr("id", "2");
    assert_eq!(e.attr("id"), Some("2"));
    assert_eq!(e.attrs().len(), 1);
}

#[test]
fn standalone_elements_parse_as_client_stanzas() {
    use switchboard_xmpp_proto::{Limits, NS_CLIENT, parse_element};
    let el = parse_element(
        b"<message to='a@b'><body>hi</body></message>",
        Limits::default(),
    )
    .expect("one element");
    assert_eq!(el.ns(), NS_CLIENT);
    assert_eq!(el.attr("to"), Some("a@b"));
    assert!(parse_element(b"<message><body>", Limits::default()).is_err());
    assert!(parse_element(b"<!DOCTYPE x><x/>", Limits::default()).is_err());
}
