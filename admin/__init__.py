"""The admin side over HTTP (issue #15): the signed-in console for owners and admins, the
REST API for services (`/api/v1`, API tokens), and the webhook endpoints' management. One
FastAPI app, `admin.app:create_admin_app`."""
