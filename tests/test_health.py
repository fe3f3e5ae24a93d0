"""GET /healthz: 200 with each part's state, 503 when the database is unreachable."""
import pytest

from parking import create_app


def test_healthy(city, client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "ok" and body["parts"]["database"]["status"] == "ok"
    assert body["parts"]["rollup"]["pending_hours"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////proc/version/cannot/be/a/directory.db",
        "postgresql+psycopg://root@127.0.0.1:1/none?connect_timeout=2",
    ],
)
def test_database_unreachable_is_503(url):
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url})
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["parts"]["database"]["status"] == "unavailable"
    api = app.test_client().get("/api/lots")
    assert api.status_code == 503 and api.json["code"] == 503
