//! `/lite`: plain HTML5 pages and forms, no scripts, no external resources.

use std::fmt::Write;

use super::escape::{clock, html as e};
use super::{ConversationPage, Flavor, HomePage, Lite, SHOWS, show_label};

const STYLE: &str = "body{font-family:sans-serif;max-width:40em;margin:0 auto;padding:0.5em}\
form.inline{display:inline}.who{font-weight:bold}.err{color:#a00}";

fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} - Switchboard</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        e(title)
    )
}

/// A one-button form posting hidden fields.
fn button(action: &str, csrf: &str, fields: &[(&str, &str)], label: &str) -> String {
    let mut out = format!(
        "<form class=\"inline\" method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        e(action),
        e(csrf)
    );
    for (name, value) in fields {
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            e(name),
            e(value)
        );
    }
    let _ = write!(out, "<input type=\"submit\" value=\"{}\"></form>", e(label));
    out
}

impl Flavor for Lite {
    const BASE: &'static str = "/lite";
    const CONTENT_TYPE: &'static str = "text/html; charset=utf-8";
    const CONTACTS_PER_PAGE: usize = 50;
    const MESSAGES_PER_PAGE: usize = 20;

    fn sign_in(error: Option<&str>) -> String {
        let mut body = String::from("<h1>Switchboard</h1>\n");
        if let Some(error) = error {
            let _ = writeln!(body, "<p class=\"err\"><strong>{}</strong></p>", e(error));
        }
        body.push_str(
            "<form method=\"post\" action=\"/lite/login\">\n\
             <p><label for=\"user\">User</label><br>\
             <input id=\"user\" name=\"user\" autocomplete=\"username\" required></p>\n\
             <p><label for=\"password\">Password</label><br>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></p>\n\
             <p><input type=\"submit\" value=\"Sign in\"></p>\n</form>\n",
        );
        document("Sign in", &body)
    }

    fn home(p: &HomePage) -> String {
        let csrf = &p.csrf;
        let mut b = String::new();
        let _ = writeln!(
            b,
            "<h1>Switchboard</h1>\n<p>Signed in as <strong>{}</strong>. {}</p>",
            e(&p.me),
            button("/lite/logout", csrf, &[], "Sign out")
        );

        // Own presence.
        b.push_str("<h2>My presence</h2>\n");
        match &p.presence {
            Some(pr) => {
                let _ = write!(
                    b,
                    "<form method=\"post\" action=\"/lite/presence\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\n\
                     <p><label for=\"show\">Show as</label> <select id=\"show\" name=\"show\">",
                    e(csrf)
                );
                for (value, label) in SHOWS {
                    let selected = if value == pr.show.as_str() {
                        " selected"
                    } else {
                        ""
                    };
                    let _ = write!(b, "<option value=\"{value}\"{selected}>{label}</option>");
                }
                let _ = writeln!(
                    b,
                    "</select></p>\n<p><label for=\"status\">Status text</label> \
                     <input id=\"status\" name=\"status\" maxlength=\"200\" value=\"{}\"></p>\n\
                     <p><input type=\"submit\" value=\"Set presence\"></p></form>",
                    e(pr.status.as_deref().unwrap_or(""))
                );
            }
            None => b.push_str("<p>No session is open for this page.</p>\n"),
        }

        // Conversations.
        b.push_str("<h2>Conversations</h2>\n");
        if p.conversations.is_empty() {
            b.push_str("<p>No conversations yet.</p>\n");
        } else {
            b.push_str("<ul>\n");
            for c in &p.conversations {
                let unread = if c.unread > 0 {
                    format!(" <strong>({} unread)</strong>", c.unread)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    b,
                    "<li><a href=\"/lite/c/{}\">{}</a>{unread}</li>",
                    e(&c.id),
                    e(&c.name)
                );
            }
            b.push_str("</ul>\n");
        }
        let _ = writeln!(
            b,
            "<form method=\"post\" action=\"/lite/open\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <p><label for=\"open\">Talk to (address)</label> <input id=\"open\" name=\"address\" required> \
             <input type=\"submit\" value=\"Open\"></p></form>",
            e(csrf)
        );

        // Contacts.
        b.push_str("<h2>Contacts</h2>\n");
        let requests: Vec<_> = p.contacts.iter().filter(|c| c.incoming).collect();
        if !requests.is_empty() {
            b.push_str("<h3>Contact requests</h3>\n<ul>\n");
            for c in requests {
                let _ = writeln!(
                    b,
                    "<li><span class=\"who\">{}</span> asks to be your contact. {} {}</li>",
                    e(&c.address),
                    button("/lite/accept", csrf, &[("address", &c.address)], "Accept"),
                    button("/lite/refuse", csrf, &[("address", &c.address)], "Refuse"),
                );
            }
            b.push_str("</ul>\n");
        }
        let others: Vec<_> = p.contacts.iter().filter(|c| !c.incoming).collect();
        if others.is_empty() {
            b.push_str("<p>No contacts yet.</p>\n");
        } else {
            b.push_str("<ul>\n");
            for c in others {
                let name = match &c.name {
                    Some(n) => format!("{} ({})", e(n), e(&c.address)),
                    None => e(&c.address),
                };
                let state = if c.accepted {
                    let mut s = format!("[{}]", show_label(c.presence.show));
                    if let Some(status) = &c.presence.status {
                        let _ = write!(s, " {}", e(status));
                    }
                    s
                } else if c.outgoing {
                    "[request sent, waiting for an answer]".to_string()
                } else {
                    "[presence not shared]".to_string()
                };
                let _ = writeln!(
                    b,
                    "<li><span class=\"who\">{name}</span> {state} {}</li>",
                    button("/lite/open", csrf, &[("address", &c.address)], "Talk"),
                );
            }
            b.push_str("</ul>\n");
        }
        if p.page > 0 || p.more {
            b.push_str("<p>");
            if p.page > 0 {
                let _ = write!(
                    b,
                    "<a href=\"/lite?page={}\">Previous contacts</a> ",
                    p.page - 1
                );
            }
            if p.more {
                let _ = write!(b, "<a href=\"/lite?page={}\">More contacts</a>", p.page + 1);
            }
            b.push_str("</p>\n");
        }
        let _ = writeln!(
            b,
            "<form method=\"post\" action=\"/lite/contacts\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <p><label for=\"add\">Add a contact (address)</label> <input id=\"add\" name=\"address\" required> \
             <input type=\"submit\" value=\"Add\"></p></form>",
            e(csrf)
        );
        b.push_str("<p><a href=\"/lite\">Refresh</a></p>\n");
        document("Contacts", &b)
    }

    fn conversation(p: &ConversationPage) -> String {
        let mut b = String::new();
        let _ = writeln!(
            b,
            "<p><a href=\"/lite\">Back to contacts</a></p>\n<h1>{}</h1>",
            e(&p.name)
        );
        if let Some(before) = p.older {
            let _ = writeln!(
                b,
                "<p><a href=\"/lite/c/{}?before={before}\">Older messages</a></p>",
                e(&p.id)
            );
        }
        if p.messages.is_empty() {
            b.push_str("<p>No messages yet.</p>\n");
        }
        for m in &p.messages {
            let who = if m.sender.as_str() == p.me {
                "me".to_string()
            } else {
                m.sender.as_str().to_string()
            };
            let _ = writeln!(
                b,
                "<p><span class=\"who\">{}</span> <small>{}</small>: {}</p>",
                e(&who),
                clock(m.sent_at),
                e(&m.body).replace('\n', "<br>")
            );
        }
        if !p.newest {
            let _ = writeln!(
                b,
                "<p><a href=\"/lite/c/{}\">Newest messages</a></p>",
                e(&p.id)
            );
        }
        let _ = writeln!(
            b,
            "<form method=\"post\" action=\"/lite/c/{}/send\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"client_id\" value=\"{}\">\n\
             <p><label for=\"body\">Message</label><br>\
             <textarea id=\"body\" name=\"body\" rows=\"3\" cols=\"40\" required></textarea></p>\n\
             <p><input type=\"submit\" value=\"Send\"></p></form>",
            e(&p.id),
            e(&p.csrf),
            e(&p.client_id)
        );
        let _ = writeln!(b, "<p><a href=\"/lite/c/{}\">Refresh</a></p>", e(&p.id));
        document(&p.name, &b)
    }

    fn error(message: &str, signed_in: bool) -> String {
        let back = if signed_in { "Back" } else { "Sign in" };
        document(
            "Error",
            &format!(
                "<h1>Something went wrong</h1>\n<p class=\"err\"><strong>{}</strong></p>\n<p><a href=\"/lite\">{back}</a></p>\n",
                e(message)
            ),
        )
    }
}
