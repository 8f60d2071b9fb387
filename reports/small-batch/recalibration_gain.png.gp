set terminal pngcairo size 800,500 font 'sans,10'
set output 'recalibration_gain.png'
set datafile separator ','
set title 'Accuracy gained by exact recalibration over the running averages' noenhanced
set xlabel 'mini-batch size'
set ylabel 'recalibrated - running-average test accuracy'
set grid
set key below noenhanced
set format x '%g'
set logscale x 2
plot 'results.csv' every ::1 using 4:(strcol(1) eq 'MLP / BN' ? column(9) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'MLP, BN', \
     'results.csv' every ::1 using 4:(strcol(1) eq 'MLP / Batch Renorm' ? column(9) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'MLP, Batch Renorm', \
     'results.csv' every ::1 using 4:(strcol(1) eq 'MLP / Ghost BN' ? column(9) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'MLP, Ghost BN', \
     'results.csv' every ::1 using 4:(strcol(1) eq 'CNN / BN' ? column(9) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'CNN, BN', \
     'results.csv' every ::1 using 4:(strcol(1) eq 'CNN / Batch Renorm' ? column(9) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'CNN, Batch Renorm', \
     'results.csv' every ::1 using 4:(strcol(1) eq 'CNN / Ghost BN' ? column(9) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'CNN, Ghost BN'
