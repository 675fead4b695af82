"""Fail if a page of the built site loads anything from the network.

Usage: python docs/check_offline.py docs/_build/html

Links a reader follows (``<a href>``) may point anywhere; what the browser
loads by itself (stylesheets, scripts, images, fonts, frames) must be part
of the site.
"""

import html.parser
import os
import re
import sys


# Attributes whose URL the browser loads when it shows the page.
LOADED = {'link': 'href', 'script': 'src', 'img': 'src', 'source': 'src',
          'iframe': 'src', 'video': 'src', 'audio': 'src', 'embed': 'src',
          'object': 'data'}
REMOTE = re.compile(r'^\s*(https?:)?//', re.IGNORECASE)
# url(...) and @import in CSS.
CSS_URL = re.compile(r'''(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)''')


class Page(html.parser.HTMLParser):

    def __init__(self):
        super().__init__()
        self.remote = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        url = attrs.get(LOADED.get(tag, ''))
        if tag == 'link' and attrs.get('rel') not in (
                'stylesheet', 'icon', 'preload', 'modulepreload'):
            # Navigation (next, prev, search, index): not loaded.
            url = None
        if url and REMOTE.match(url):
            self.remote.append(f'<{tag}> {url}')
        for url in CSS_URL.findall(attrs.get('style', '')):
            if REMOTE.match(url):
                self.remote.append(f'style of <{tag}> {url}')


def remote_assets(root):
    """``(file, what)`` for each asset a file under `root` loads remotely."""
    found = []
    for directory, _, names in os.walk(root):
        for name in sorted(names):
            path = os.path.join(directory, name)
            if name.endswith('.html'):
                page = Page()
                with open(path, encoding='utf-8') as f:
                    page.feed(f.read())
                found.extend((path, what) for what in page.remote)
            elif name.endswith('.css'):
                with open(path, encoding='utf-8') as f:
                    for url in CSS_URL.findall(f.read()):
                        if REMOTE.match(url):
                            found.append((path, url))
    return found


def main(root):
    if not os.path.isfile(os.path.join(root, 'index.html')):
        sys.exit(f'{root} has no index.html: build the site first')
    found = remote_assets(root)
    for path, what in found:
        print(f'{path}: loads {what} from the network', file=sys.stderr)
    sys.exit(1 if found else 0)


if __name__ == '__main__':
    main(*sys.argv[1:])
