//! `/wap`: WML 1.1 decks for phones with a WAP browser. Small decks: at most ten contacts or
//! ten messages each, with links to more.

use std::fmt::Write;

use super::escape::{clock, wml as e};
use super::{ConversationPage, Flavor, HomePage, SHOWS, Wap, show_label};

fn deck(cards: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE wml PUBLIC \"-//WAPFORUM//DTD WML 1.1//EN\" \
         \"http://www.wapforum.org/DTD/wml_1.1.xml\">\n<wml>\n{cards}</wml>\n"
    )
}

/// A link that posts fields. Values starting with `$(` are WML variables and taken as is;
/// everything else is escaped.
fn post(href: &str, csrf: &str, fields: &[(&str, &str)], label: &str) -> String {
    let mut out = format!(
        "<anchor>{}<go method=\"post\" href=\"{}\">",
        e(label),
        e(href)
    );
    if !csrf.is_empty() {
        let _ = write!(out, "<postfield name=\"csrf\" value=\"{}\"/>", e(csrf));
    }
    for (name, value) in fields {
        let value = if value.starts_with("$(") {
            value.to_string()
        } else {
            e(value)
        };
        let _ = write!(out, "<postfield name=\"{}\" value=\"{value}\"/>", e(name));
    }
    out.push_str("</go></anchor>");
    out
}

impl Flavor for Wap {
    const BASE: &'static str = "/wap";
    const CONTENT_TYPE: &'static str = "text/vnd.wap.wml; charset=utf-8";
    const CONTACTS_PER_PAGE: usize = 10;
    const MESSAGES_PER_PAGE: usize = 10;

    fn sign_in(error: Option<&str>) -> String {
        let mut c = String::from("<card id=\"login\" title=\"Sign in\">\n<p>\n");
        if let Some(error) = error {
            let _ = writeln!(c, "<b>{}</b><br/>", e(error));
        }
        c.push_str("User: <input name=\"user\" title=\"User\"/><br/>\n");
        c.push_str("Password: <input name=\"pw\" type=\"password\" title=\"Password\"/><br/>\n");
        c.push_str(&post(
            "/wap/login",
            "",
            &[("user", "$(user)"), ("password", "$(pw)")],
            "Sign in",
        ));
        c.push_str("\n</p>\n</card>\n");
        deck(&c)
    }

    fn home(p: &HomePage) -> String {
        let csrf = &p.csrf;
        let mut c = String::from("<card id=\"main\" title=\"Switchboard\">\n<p>\n");
        let _ = writeln!(c, "{}<br/>", e(&p.me));
        if let Some(pr) = &p.presence {
            let _ = write!(c, "Me: {}", show_label(pr.show));
            if let Some(s) = &pr.status {
                let _ = write!(c, " - {}", e(s));
            }
            c.push_str(" <a href=\"#pres\">Change</a><br/>\n");
        }
        if !p.conversations.is_empty() {
            c.push_str("<b>Chats</b><br/>\n");
            for conv in &p.conversations {
                let unread = if conv.unread > 0 {
                    format!(" ({})", conv.unread)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    c,
                    "<a href=\"/wap/c/{}\">{}</a>{unread}<br/>",
                    e(&conv.id),
                    e(&conv.name)
                );
            }
        }
        c.push_str("<b>Contacts</b><br/>\n");
        if p.contacts.is_empty() {
            c.push_str("None yet.<br/>\n");
        }
        for ct in &p.contacts {
            if ct.incoming {
                let _ = writeln!(
                    c,
                    "{} asks: {} {}<br/>",
                    e(&ct.address),
                    post("/wap/accept", csrf, &[("address", &ct.address)], "Accept"),
                    post("/wap/refuse", csrf, &[("address", &ct.address)], "Refuse"),
                );
                continue;
            }
            let state = if ct.accepted {
                let mut s = show_label(ct.presence.show).to_string();
                if let Some(status) = &ct.presence.status {
                    s = format!("{} - {}", e(&s), e(status));
                }
                s
            } else if ct.outgoing {
                "asked".to_string()
            } else {
                "-".to_string()
            };
            let _ = writeln!(
                c,
                "{} [{state}] {}<br/>",
                e(ct.name.as_deref().unwrap_or(&ct.address)),
                post("/wap/open", csrf, &[("address", &ct.address)], "Talk"),
            );
        }
        if p.page > 0 {
            let _ = writeln!(c, "<a href=\"/wap?page={}\">Back</a><br/>", p.page - 1);
        }
        if p.more {
            let _ = writeln!(c, "<a href=\"/wap?page={}\">More</a><br/>", p.page + 1);
        }
        c.push_str("<a href=\"#add\">Add / talk to...</a><br/>\n");
        c.push_str("<a href=\"/wap\">Refresh</a><br/>\n");
        c.push_str(&post("/wap/logout", csrf, &[], "Sign out"));
        c.push_str("\n</p>\n</card>\n");

        // Own presence.
        let (show, status) = p
            .presence
            .as_ref()
            .map(|pr| (pr.show.as_str(), pr.status.clone().unwrap_or_default()))
            .unwrap_or(("available", String::new()));
        let _ = write!(
            c,
            "<card id=\"pres\" title=\"Presence\">\n<p>\n<select name=\"show\" value=\"{show}\">"
        );
        for (value, label) in SHOWS {
            let _ = write!(c, "<option value=\"{value}\">{label}</option>");
        }
        let _ = writeln!(
            c,
            "</select><br/>\nStatus: <input name=\"status\" value=\"{}\" maxlength=\"200\"/><br/>",
            e(&status)
        );
        c.push_str(&post(
            "/wap/presence",
            csrf,
            &[("show", "$(show)"), ("status", "$(status)")],
            "Set",
        ));
        c.push_str("<br/>\n<a href=\"#main\">Back</a>\n</p>\n</card>\n");

        // Add a contact or talk to an address.
        c.push_str(
            "<card id=\"add\" title=\"Address\">\n<p>\nAddress: <input name=\"addr\"/><br/>\n",
        );
        c.push_str(&post(
            "/wap/contacts",
            csrf,
            &[("address", "$(addr)")],
            "Add contact",
        ));
        c.push_str("<br/>\n");
        c.push_str(&post("/wap/open", csrf, &[("address", "$(addr)")], "Talk"));
        c.push_str("<br/>\n<a href=\"#main\">Back</a>\n</p>\n</card>\n");
        deck(&c)
    }

    fn conversation(p: &ConversationPage) -> String {
        let mut c = format!(
            "<card id=\"chat\" title=\"{}\">\n\
             <onevent type=\"onenterforward\"><refresh><setvar name=\"body\" value=\"\"/></refresh></onevent>\n<p>\n",
            e(&p.name)
        );
        if let Some(before) = p.older {
            let _ = writeln!(
                c,
                "<a href=\"/wap/c/{}?before={before}\">Older</a><br/>",
                e(&p.id)
            );
        }
        if p.messages.is_empty() {
            c.push_str("No messages yet.<br/>\n");
        }
        for m in &p.messages {
            let who = if m.sender.as_str() == p.me {
                "me"
            } else {
                m.sender.as_str()
            };
            let _ = writeln!(
                c,
                "<b>{}</b> {}: {}<br/>",
                e(who),
                clock(m.sent_at),
                e(&m.body)
            );
        }
        if !p.newest {
            let _ = writeln!(c, "<a href=\"/wap/c/{}\">Newest</a><br/>", e(&p.id));
        }
        c.push_str("<input name=\"body\" title=\"Message\"/><br/>\n");
        c.push_str(&post(
            &format!("/wap/c/{}/send", p.id),
            &p.csrf,
            &[("client_id", &p.client_id), ("body", "$(body)")],
            "Send",
        ));
        let _ = write!(
            c,
            "<br/>\n<a href=\"/wap/c/{}\">Refresh</a><br/>\n<a href=\"/wap\">Contacts</a>\n</p>\n</card>\n",
            e(&p.id)
        );
        deck(&c)
    }

    fn error(message: &str, signed_in: bool) -> String {
        let back = if signed_in { "Back" } else { "Sign in" };
        deck(&format!(
            "<card id=\"error\" title=\"Error\">\n<p>\n<b>{}</b><br/>\n<a href=\"/wap\">{back}</a>\n</p>\n</card>\n",
            e(message)
        ))
    }
}
