# The compose stack's broker: the official image with the project's refusals plugin
# (stack/mosquitto_refusals.c), built for the image's own C library (Alpine, musl).
FROM eclipse-mosquitto:2 AS plugin
RUN apk add --no-cache gcc musl-dev
COPY stack/mosquitto_refusals.c /src/mosquitto_refusals.c
RUN gcc -O2 -fPIC -shared -o /src/mosquitto_refusals.so /src/mosquitto_refusals.c

FROM eclipse-mosquitto:2
COPY --from=plugin /src/mosquitto_refusals.so /usr/lib/mosquitto_refusals.so
