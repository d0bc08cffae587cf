"""Associated domains and single sign-on (issue #14): an account claims a domain, proves it
with a DNS TXT record (domains.verification), and people of a verified domain join through
the company's IdP (domains.sso). The table is domains.tables.ClaimedDomain."""
