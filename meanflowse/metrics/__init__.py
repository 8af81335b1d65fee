"""Measurement: PESQ, ESTOI, SI-SDR, DNSMOS, speaker similarity and the checks they share."""
