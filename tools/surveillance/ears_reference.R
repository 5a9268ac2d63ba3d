# Reference alarms of R's surveillance::earsC for crates/surveillance/tests/data/earsc_reference.csv.
#
#   Rscript tools/surveillance/ears_reference.R > crates/surveillance/tests/data/earsc_reference.csv
#
# Needs R with the surveillance package (Debian: r-cran-surveillance). The series are drawn
# here (fixed seeds) and written with the results, so the Rust test reads the very counts R saw.
suppressPackageStartupMessages(library(surveillance))

series <- list()
set.seed(20261207)
series$poisson_low <- rpois(120, 2)
series$poisson_mid <- rpois(120, 15)
outbreak <- rpois(120, 6)
outbreak[80:86] <- outbreak[80:86] + c(4, 9, 15, 22, 18, 10, 5)
series$outbreak <- outbreak
series$sparse <- rbinom(120, 1, 0.15) * rpois(120, 1)
series$flat_then_jump <- c(rep(3, 40), 3, 3, 9, rep(3, 20), 0, 0, 12, rep(3, 54))
weekly <- rpois(120, 10 + 6 * (((1:120) %% 7) %in% c(1, 2)))
series$weekly <- weekly

cases <- list(
  list(method = "C1", baseline = 7, alpha = 0.001, minSigma = 0),
  list(method = "C2", baseline = 7, alpha = 0.001, minSigma = 0),
  list(method = "C3", baseline = 7, alpha = 0.025, minSigma = 0),
  list(method = "C1", baseline = 7, alpha = 0.05, minSigma = 0.5),
  list(method = "C2", baseline = 10, alpha = 0.01, minSigma = 1),
  list(method = "C3", baseline = 10, alpha = 0.05, minSigma = 0.5),
  list(method = "C3", baseline = 7, alpha = 0.1, minSigma = 1)
)

cat("series,method,baseline,alpha,minSigma,day,observed,upperbound,alarm\n")
for (name in names(series)) {
  y <- series[[name]]
  for (k in cases) {
    lag <- switch(k$method, C1 = 0, C2 = 2, C3 = 4)
    first <- k$baseline + lag + 1
    s <- sts(observed = matrix(y, ncol = 1), start = c(2026, 1), frequency = 365)
    out <- earsC(s, control = list(range = first:length(y), method = k$method,
                                   baseline = k$baseline, alpha = k$alpha,
                                   minSigma = k$minSigma))
    ub <- upperbound(out)[, 1]
    al <- alarms(out)[, 1]
    # Every day of the series (0-based, as phip counts); "-" before the first evaluated day.
    for (day in 0:(length(y) - 1)) {
      i <- day + 1 - first + 1
      if (i < 1) {
        bound <- "-"
        alarm <- "-"
      } else {
        bound <- ifelse(is.na(ub[i]), "NA", sprintf("%.12g", ub[i]))
        alarm <- ifelse(is.na(al[i]), "NA", ifelse(al[i], "1", "0"))
      }
      cat(sprintf("%s,%s,%d,%s,%s,%d,%d,%s,%s\n", name, k$method, k$baseline,
                  format(k$alpha), format(k$minSigma), day, y[day + 1], bound, alarm))
    }
  }
}
