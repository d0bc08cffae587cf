"""What people read, in one place: the labels (`content.labels`), the Jinja2 environment
and its formatting helpers (`content.present`), every template (`templates/email` for the
mail activity, `templates/pages` for the link handler, `templates/console` for the admin
console, one shared `base.html` and progress table) and the stylesheets (`static`).

The mail activity, the link handler and the admin app all render from here; none of them
imports another's web app to do so."""
