import time
from tests.test_map_browser import *  # noqa
from tests.test_map_browser import backend, readings, site, browser, open_map  # noqa

def test_timing(open_map, site):
    t = time.time(); features(site); print("api", time.time() - t)
    t = time.time(); mp = open_map(); print("open", time.time() - t)
    t = time.time(); mp.page.locator(".lot-marker").count(); print("count", time.time() - t)
