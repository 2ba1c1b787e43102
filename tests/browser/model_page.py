#!/usr/bin/env python3
"""Drives Debian's Chromium on the page of an imported (non-digit) model: reads the title, the
class labels on its bars and whether a drawing canvas shows, uploads each picture and reads the
answer off the page. Called by tests/digit_page_in_chromium.rs, which serves the page and
judges what this prints: one JSON object on the last line of stdout.

Usage: model_page.py URL PICTURE... OUT_DIR
"""

import json
import sys

from selenium.webdriver.common.by import By

from digit_page import browser, seq, wait_answer


def main():
    url, pictures, out_dir = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
    d = browser()
    result = {"uploads": []}
    try:
        d.get(url)
        result["title"] = d.title
        result["heading"] = d.find_element(By.TAG_NAME, "h1").text
        result["labels"] = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#bars li .label")]
        result["canvas_visible"] = d.find_element(By.ID, "pad").is_displayed()
        result["status_before"] = d.find_element(By.ID, "status").text
        for path in pictures:
            before = seq(d)
            d.find_element(By.ID, "file").send_keys(path)
            read, status = wait_answer(d, before, "upload")
            top = d.execute_script(
                "const r = document.querySelector('#bars li.top .label'); return r ? r.textContent : null;")
            result["uploads"].append({"path": path, "read": read, "status": status, "top_bar": top})
        d.save_screenshot(f"{out_dir}/model-page.png")
        result["console_errors"] = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        d.quit()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
