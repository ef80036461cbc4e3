//! A small owned XML element tree: what a stanza is once parsed.

use std::fmt::Write as _;

/// The namespace bound to the `xml:` prefix (for `xml:lang`).
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// One attribute: optional namespace (only for prefixed attributes), local name, value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Namespace URI of a prefixed attribute; `None` for plain attributes.
    pub ns: Option<String>,
    /// Local name.
    pub name: String,
    /// Value, with references already expanded.
    pub value: String,
}

/// A child of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data (references expanded).
    Text(String),
}

/// An XML element with a namespaced name, attributes and children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    name: String,
    ns: String,
    attrs: Vec<Attribute>,
    nodes: Vec<Node>,
}

impl Element {
    /// A new empty element `name` in namespace `ns` (`""` for no namespace).
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// Builder: set a plain (unprefixed) attribute.
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder: append a child element.
    pub fn with_child(mut self, child: Element) -> Self {
        self.nodes.push(Node::Element(child));
        self
    }

    /// Builder: append text.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.append_text(text);
        self
    }

    /// Local name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Namespace URI (`""` when the element is in no namespace).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Whether this element is `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// Value of the plain (unprefixed) attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_none() && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// Value of the namespaced attribute `{ns}name` (e.g. `xml:lang` is `(NS_XML, "lang")`).
    pub fn attr_ns(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.as_deref() == Some(ns) && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// All attributes, in document order.
    pub fn attrs(&self) -> &[Attribute] {
        &self.attrs
    }

    /// Set (or replace) a plain attribute.
    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self
            .attrs
            .iter_mut()
            .find(|a| a.ns.is_none() && a.name == name)
        {
            Some(a) => a.value = value,
            None => self.attrs.push(Attribute {
                ns: None,
                name,
                value,
            }),
        }
    }

    /// Add an attribute as parsed (no duplicate check).
    pub(crate) fn push_attribute(&mut self, attr: Attribute) {
        self.attrs.push(attr);
    }

    /// All child nodes (elements and text) in document order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Child elements in document order.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.nodes.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// First child element named `name` in namespace `ns`.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|c| c.is(name, ns))
    }

    /// Concatenation of this element's direct text children.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }

    /// Append a child element.
    pub fn append_child(&mut self, child: Element) {
        self.nodes.push(Node::Element(child));
    }

    /// Append text, merging with a preceding text node.
    pub fn append_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        if let Some(Node::Text(last)) = self.nodes.last_mut() {
            last.push_str(&text);
        } else {
            self.nodes.push(Node::Text(text));
        }
    }

    /// The children, mutable.
    pub fn nodes_mut(&mut self) -> &mut [Node] {
        &mut self.nodes
    }

    /// Moves this element and every descendant in namespace `from` to namespace `to` (BOSH
    /// stanzas that inherited the wrapper's namespace are `jabber:client` stanzas).
    pub fn rename_ns(&mut self, from: &str, to: &str) {
        if self.ns == from {
            self.ns = to.to_string();
        }
        for node in &mut self.nodes {
            if let Node::Element(child) = node {
                child.rename_ns(from, to);
            }
        }
    }

    /// Serialize as a standalone XML fragment; the root always declares its namespace.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write_xml(None, &mut out);
        out
    }

    /// Serialize for writing inside a stream whose content namespace is
    /// `stream_ns`: the root omits `xmlns` when it equals that namespace.
    pub fn to_xml_in(&self, stream_ns: &str) -> String {
        let mut out = String::new();
        self.write_xml(Some(stream_ns), &mut out);
        out
    }

    fn write_xml(&self, inherited_ns: Option<&str>, out: &mut String) {
        out.push('<');
        out.push_str(&self.name);
        if inherited_ns != Some(self.ns.as_str()) {
            out.push_str(" xmlns=\"");
            escape_into(&self.ns, true, out);
            out.push('"');
        }
        let mut extra_prefix = 0usize;
        for a in &self.attrs {
            out.push(' ');
            match a.ns.as_deref() {
                None => out.push_str(&a.name),
                Some(NS_XML) => {
                    out.push_str("xml:");
                    out.push_str(&a.name);
                }
                Some(ns) => {
                    let _ = write!(out, "xmlns:a{extra_prefix}=\"");
                    escape_into(ns, true, out);
                    let _ = write!(out, "\" a{extra_prefix}:{}", a.name);
                    extra_prefix += 1;
                }
            }
            out.push_str("=\"");
            escape_into(&a.value, true, out);
            out.push('"');
        }
        if self.nodes.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for n in &self.nodes {
            match n {
                Node::Element(e) => e.write_xml(Some(&self.ns), out),
                Node::Text(t) => escape_into(t, false, out),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

/// Escape `s` for XML character data (`attr = false`) or a double-quoted
/// attribute value (`attr = true`).
pub fn escape_into(s: &str, attr: bool, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\'' if attr => out.push_str("&apos;"),
            '\t' if attr => out.push_str("&#9;"),
            '\n' if attr => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

/// Escape `s` into a new string (see [`escape_into`]).
pub fn escape(s: &str, attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(s, attr, &mut out);
    out
}
