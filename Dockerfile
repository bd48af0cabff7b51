# p5proxy container: slim Python, non-root, port 18185, configuration mounted read-only.
#   docker build -t p5proxy .
#   docker run -p 18185:18185 -e OPENAI_BASE_URL=... -e OPENAI_API_KEY=... p5proxy
#   docker run -p 18185:18185 -v $PWD/p5proxy.yaml:/etc/p5proxy/config.yaml:ro \
#       -e P5PROXY_CONFIG=/etc/p5proxy/config.yaml p5proxy
# docker-compose.yml adds Redis for the response cache. Guide: docs/deploy.md.
# Built in a first stage with a C compiler, so that the hot-path modules are compiled (setup.py);
# the image itself carries no compiler.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY setup.py setup.cfg pyproject.toml README.md ./
COPY p5proxy ./p5proxy
COPY plugins ./plugins
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels

RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin p5proxy \
    && mkdir -p /etc/p5proxy /var/lib/p5proxy && chown p5proxy /var/lib/p5proxy
# The request log (SQLite, unless logs.database_url says otherwise) lives here.
ENV P5PROXY_DATA_DIR=/var/lib/p5proxy
VOLUME /var/lib/p5proxy
USER p5proxy
WORKDIR /tmp

EXPOSE 18185
# Without P5PROXY_CONFIG the gateway starts on embedded defaults and routes from
# OPENAI_BASE_URL / OPENAI_API_KEY / ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY (.env.example).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % (os.environ.get('P5PROXY_PORT') or 18185), timeout=4)"
STOPSIGNAL SIGTERM
CMD ["p5proxy", "serve", "--host", "0.0.0.0"]
