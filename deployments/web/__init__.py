"""The Course Data page (CONTRACT 5.1): server-rendered HTML on the download service.

``session`` turns a launch token into a session cookie and checks CSRF tokens,
``course_view`` turns export records and Prefect runs into what the page shows,
``starter`` turns a form into a deployment run, and ``pages`` holds the routes.
"""
